"""The forwarding engine's decisions in process: real connections, pools and engine on
in-memory transports, time moved by hand through the deadline sweep. Each fault here was
found by an attack tool (docs/reliability.md) and is checked without a network."""

from __future__ import annotations

import asyncio

from engine_rig import LIMITS, UPSTREAM_TIMEOUT, EngineRig, turns
from ringlb.dataplane.testing import MemoryTransport

GET = b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
BIG_HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n"


async def test_a_plain_get_goes_through_byte_for_byte_and_the_connection_is_reused() -> None:
    rig = EngineRig()
    [replica] = rig.upstreams()
    client = rig.client()
    client.feed(GET)
    sent = replica.take()
    assert sent.startswith(b"GET /home HTTP/1.1\r\nHost: lb\r\nX-Forwarded-For: 127.0.0.1\r\n")
    replica.feed(ANSWER)
    assert client.take() == ANSWER
    assert rig.idle() == 1 and rig.forwarder.inflight == 0
    assert rig.replicas[0].answers[2] == 1


async def test_a_malformed_chunked_body_aborts_its_exchange_at_once() -> None:
    rig = EngineRig()
    [replica] = rig.upstreams()
    client = rig.client()
    client.feed(b"POST /echo HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n")
    await turns()  # the exchange starts: head to the replica, the body to follow
    assert replica.take().startswith(b"POST /echo HTTP/1.1\r\n")
    client.feed(b"5\r\nABCDE0")  # no CRLF after the chunk: malformed
    answer = client.take()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close" in answer
    assert client.closed and replica.closed  # the half-sent request cannot be reused
    await turns()
    assert rig.forwarder.inflight == 0 and rig.replicas[0].inflight == 0
    assert rig.routing.ejected == []  # the client's fault, not the replica's


async def test_a_client_that_stops_reading_is_not_the_replicas_silence() -> None:
    rig = EngineRig()
    [replica] = rig.upstreams()
    client = rig.client()
    client.feed(GET)
    replica.feed(BIG_HEAD + b"x" * 1000)
    conn = replica.protocol
    client.protocol.pause_writing()  # the client's socket is full
    assert not replica.reading  # the replica is read no faster than the client takes
    rig.sweep.sweep(rig.sweep.now + 3 * UPSTREAM_TIMEOUT)
    assert not replica.closed and rig.routing.ejected == []
    assert conn.pool._has_room()  # its slot went to whoever else needs this replica
    client.protocol.resume_writing()
    assert replica.reading and not conn.pool._parked
    rig.sweep.sweep(rig.sweep.now + UPSTREAM_TIMEOUT + 1)  # now the replica is silent
    assert replica.closed and rig.routing.ejected == ["server_1"]


async def test_a_connection_paused_by_the_answers_last_write_goes_back_reading() -> None:
    class FillingTransport(MemoryTransport):
        """A client socket that is full after any write."""

        def write(self, data: bytes) -> None:
            super().write(data)
            self.protocol.pause_writing()

    rig = EngineRig()
    [replica] = rig.upstreams()
    client = rig.client(FillingTransport)
    client.feed(GET)
    replica.feed(ANSWER)
    assert client.take() == ANSWER
    assert rig.idle() == 1 and replica.reading
    assert not replica.protocol.waiting_on_client and not replica.protocol.pool._parked


async def test_a_client_that_takes_no_bytes_is_cut_off_after_the_send_timeout() -> None:
    rig = EngineRig()
    [replica] = rig.upstreams()
    client = rig.client()
    client.feed(GET)
    replica.feed(BIG_HEAD + b"x" * 1000)
    client.protocol.pause_writing()
    now = rig.sweep.now
    rig.sweep.sweep(now + LIMITS.send_timeout - 1)
    assert not client.closed
    rig.sweep.sweep(now + LIMITS.send_timeout + 0.5)
    assert client.aborted  # dropped, not drained: its buffer is freed at once
    assert replica.closed and rig.forwarder.inflight == 0


async def test_a_client_that_leaves_stops_its_exchange() -> None:
    rig = EngineRig()
    [replica] = rig.upstreams()
    client = rig.client()
    client.feed(GET)
    client.lose()
    await turns()
    assert replica.closed  # mid-exchange: it can never be reused
    assert rig.forwarder.inflight == 0 and rig.replicas[0].inflight == 0
    assert sum(rig.replicas[0].answers) == 0  # nothing was answered


async def test_an_answer_cut_short_aborts_the_client_connection() -> None:
    rig = EngineRig()
    [replica] = rig.upstreams()
    client = rig.client()
    client.feed(GET)
    replica.feed(BIG_HEAD + b"x" * 1000)
    assert client.take().startswith(b"HTTP/1.1 200 OK")
    replica.lose()  # the replica dies mid-answer
    await turns()
    assert client.aborted and rig.routing.ejected == ["server_1"]
    assert rig.forwarder.inflight == 0


async def test_a_replica_that_dies_under_a_request_is_ejected_and_the_next_one_answers() -> None:
    rig = EngineRig()
    [first] = rig.upstreams(0)
    [second] = rig.upstreams(1)
    client = rig.client()
    client.feed(GET)
    first.take()
    first.lose()  # a kept-alive connection closes before any byte of the answer
    # Maybe the replica only closed an idle connection: a GET is tried once more on a new
    # connection to it (here refused: nothing listens at its address), then elsewhere.
    for _ in range(200):
        if second.written:
            break
        await asyncio.sleep(0.005)
    assert second.take().startswith(b"GET /home")
    second.feed(ANSWER)
    assert client.take() == ANSWER
    assert rig.routing.ejected == ["server_1"] and rig.forwarder.retries == 2


async def test_a_new_connection_that_sends_nothing_gets_408() -> None:
    rig = EngineRig()
    client = rig.client()
    rig.sweep.sweep(rig.sweep.now + LIMITS.header_timeout + 0.5)
    answer = client.take()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"Request headers not received within 10 s" in answer and client.closed


async def test_the_sweep_goes_on_past_an_expiry_that_fails() -> None:
    class Broken:
        deadline = 1.0

        def expired(self) -> None:
            raise RuntimeError("a bug in one connection")

    rig = EngineRig()
    fine = rig.client()
    rig.listener.clients.add(Broken())  # type: ignore[arg-type]
    rig.sweep.sweep(rig.sweep.now + LIMITS.header_timeout + 0.5)
    assert fine.take().startswith(b"HTTP/1.1 408")


async def test_an_early_answer_ends_the_body_upload_and_frees_the_slot() -> None:
    rig = EngineRig()
    [replica] = rig.upstreams()
    client = rig.client()
    client.feed(b"PUT /echo HTTP/1.1\r\nHost: lb\r\nContent-Length: 1000000\r\n\r\n")
    client.feed(b"x" * 300_000)
    await turns()
    replica.take()
    replica.feed(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n")
    await turns()
    assert client.take().startswith(b"HTTP/1.1 413")
    assert client.closed  # the rest of its body is unread: the connection cannot go on
    assert replica.closed  # the replica did not get the whole body either
    assert rig.forwarder.inflight == 0 and not rig.pools.busy
