"""Upgrades in the forwarding engine, in process: the 101 turns the request's connections
into a tunnel (ringlb.dataplane.tunnel) with back-pressure both ways, its own idle deadline
and its replica's pool closing it; refusals and h2c stay HTTP."""

from __future__ import annotations

from engine_rig import LIMITS, EngineRig, turns
from ringlb.dataplane.tunnel import Tunnel

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: lb\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
SWITCHED = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
)


async def tunnel(rig: EngineRig, early: bytes = b"", late: bytes = b""):
    """Returns the client's and the replica's transports once the tunnel is up."""
    [replica] = rig.upstreams()
    client = rig.client()
    client.feed(UPGRADE + early)
    sent = replica.take()
    assert b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" in sent
    assert b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==" in sent
    assert not client.reading  # nothing more is read until the replica answers
    replica.feed(SWITCHED + late)
    return client, replica


async def test_a_101_joins_the_two_connections_byte_for_byte() -> None:
    rig = EngineRig(replicas=1)
    client, replica = await tunnel(rig, early=b"client-first", late=b"replica-first")
    answer = client.take()
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    assert answer.endswith(b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\nreplica-first")
    assert replica.take() == b"client-first"  # sent before the 101, passed on after it
    assert client.reading and replica.reading
    client.feed(b"\x81\x05hello")
    assert replica.take() == b"\x81\x05hello"
    replica.feed(b"\x81\x05world")
    assert client.take() == b"\x81\x05world"
    server = rig.replicas[0]
    assert server.tunnels == 1 and server.inflight == 0 and rig.forwarder.inflight == 0
    assert server.answers[1] == 1
    pool = rig.pools.by_replica[server]
    assert pool._open == 0 and rig.idle() == 0  # the tunnel holds no pool slot
    assert isinstance(client.protocol, type(replica.protocol))


async def test_back_pressure_runs_both_ways() -> None:
    rig = EngineRig(replicas=1)
    client, replica = await tunnel(rig)
    client.protocol.pause_writing()  # the client does not take what the replica sends
    assert not replica.reading and client.reading
    client.protocol.resume_writing()
    assert replica.reading
    replica.protocol.pause_writing()  # the replica does not take what the client sends
    assert not client.reading and replica.reading
    replica.protocol.resume_writing()
    assert client.reading


async def test_either_side_closing_closes_the_other_and_counts_the_tunnel_out() -> None:
    for closing in ("client", "replica"):
        rig = EngineRig(replicas=1)
        client, replica = await tunnel(rig)
        (client if closing == "client" else replica).lose()
        await turns()
        assert client.closed and replica.closed, closing
        assert rig.replicas[0].tunnels == 0 and not rig.listener.clients


async def test_an_idle_tunnel_is_closed_by_the_sweep_and_an_active_one_is_not() -> None:
    rig = EngineRig(replicas=1)
    client, replica = await tunnel(rig)
    start = rig.sweep.now
    rig.sweep.sweep(start + LIMITS.tunnel_idle_timeout - 1)
    client.feed(b"ping")  # activity moves the deadline on
    rig.sweep.now = start + LIMITS.tunnel_idle_timeout - 1
    client.feed(b"ping")
    rig.sweep.sweep(start + LIMITS.tunnel_idle_timeout + 1)
    assert not client.closed
    rig.sweep.sweep(start + 2 * LIMITS.tunnel_idle_timeout)
    await turns()
    assert client.aborted and replica.closed and rig.replicas[0].tunnels == 0


async def test_the_replica_leaving_closes_its_tunnels() -> None:
    rig = EngineRig(replicas=1)
    client, replica = await tunnel(rig)
    [open_tunnel] = rig.pools.by_replica[rig.replicas[0]].tunnels
    assert isinstance(open_tunnel, Tunnel)
    rig.pools.forget(rig.replicas[0])  # /rm after its drain, or a dead replica
    await turns()
    assert client.closed and replica.closed and rig.replicas[0].tunnels == 0


async def test_a_refused_upgrade_is_relayed_and_the_connection_closes() -> None:
    rig = EngineRig(replicas=1)
    [replica] = rig.upstreams()
    client = rig.client()
    client.feed(UPGRADE)
    replica.take()
    replica.feed(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno")
    answer = client.take()
    assert answer.startswith(b"HTTP/1.1 400") and b"Connection: close\r\n" in answer
    await turns()
    assert client.closed and rig.replicas[0].tunnels == 0


async def test_a_101_to_a_request_that_did_not_ask_is_a_failed_attempt() -> None:
    rig = EngineRig(replicas=1)
    [replica] = rig.upstreams()
    client = rig.client()
    client.feed(b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n")
    replica.take()
    replica.feed(SWITCHED)
    await turns()
    assert b"101" not in client.take().split(b"\r\n", 1)[0]
    assert rig.replicas[0].tunnels == 0
