"""Clients that hold the balancer up on purpose, against a real balancer and real replicas:
each fault an attack tool found (docs/reliability.md, `make attack`) as a plain test."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lbtest import BalancerProcess, wait_until

ECHO = Path(__file__).resolve().parent.parent / "echo_replica.py"
COMMAND = f"{{python}} {ECHO} --id {{name}} --host {{host}} --port {{port}}"
HUGE = 1 << 30  # an answer far larger than every buffer on the way


@pytest.fixture(scope="module")
def lb() -> Iterator[BalancerProcess]:
    """One replica with two pooled connections, a 1 s upstream timeout: a slow client that
    held a slot, or was taken for a silent replica, would show at once."""
    balancer = BalancerProcess(
        "--replica-command", COMMAND, "--replicas", "1",
        "--upstream-pool-size", "2", "--upstream-timeout", "1",
        "--client-header-timeout", "1", "--client-send-timeout", "60",
    )  # fmt: skip
    try:
        yield balancer.start()
    finally:
        balancer.cleanup()


def connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf is not None:  # a small window: the balancer's writes block soon
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def ejections(balancer: BalancerProcess) -> float:
    for line in balancer.get("/metrics").body.decode().splitlines():
        if line.startswith("ringlb_ejections_total "):
            return float(line.split()[1])
    raise AssertionError("no ringlb_ejections_total in /metrics")


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_malformed_chunked_body_is_refused_at_once(lb: BalancerProcess) -> None:
    sock = connect(lb.port)
    try:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nABCDE0"
        )
        started = time.monotonic()
        answer = read_answer(sock)  # the connection stays open on our side: we hold it
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"Connection: close" in answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["status"] == "failure"
        assert time.monotonic() - started < 5  # at once, not at some deadline
        assert sock.recv(1) == b""  # and closed
    finally:
        sock.close()
    assert lb.get("/home").status == 200


def test_a_connection_that_sends_nothing_gets_408_after_the_header_timeout(
    lb: BalancerProcess,
) -> None:
    sock = connect(lb.port)
    try:
        answer = read_answer(sock)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"Request headers not received within 1 s" in answer
    finally:
        sock.close()


def test_slow_readers_hold_neither_the_replica_nor_the_other_clients(lb: BalancerProcess) -> None:
    """Four clients that ask for a huge answer and read none of it, on a replica with two
    pooled connections: nobody waits behind them, and their stalled answers are not
    taken for the replica's silence (the upstream timeout is 1 s here)."""
    before = ejections(lb)
    readers = [connect(lb.port, rcvbuf=4096) for _ in range(4)]
    try:
        for sock in readers:
            sock.sendall(f"GET /bytes/{HUGE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(2.5)  # well past the upstream timeout, with every reader stalled
        for _ in range(5):
            started = time.monotonic()
            reply = lb.get("/home", timeout=5)
            assert reply.status == 200
            assert time.monotonic() - started < 2
        assert lb.replicas() == ["server_1"]
        assert ejections(lb) == before
    finally:
        for sock in readers:
            sock.close()


def test_a_client_that_takes_none_of_its_answer_is_cut_off() -> None:
    balancer = BalancerProcess(
        "--replica-command", COMMAND, "--replicas", "1", "--client-send-timeout", "1"
    )
    balancer.start()
    try:
        sock = connect(balancer.port, rcvbuf=4096)
        sock.sendall(f"GET /bytes/{HUGE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(3)  # takes nothing for three times the send timeout
        received, started = 0, time.monotonic()
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
                assert time.monotonic() - started < 20, "never cut off"
        except ConnectionResetError:
            pass  # cut off: what was still unsent was dropped
        assert received < HUGE
        assert "reads too slowly (its answer did not drain in 1 s)" in balancer.log()
        wait_until(lambda: balancer.get("/home").status == 200, 5)
    finally:
        balancer.cleanup()
