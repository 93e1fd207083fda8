"""WebSocket through a real balancer: real replica processes (ringlb's own, with their `/ws`
echo), the `websockets` client, and raw sockets where a library would hide the bytes.

Figures (time, the balancer's memory) are printed, not asserted: `pytest -s` shows them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from lbtest import BalancerProcess, pid_of_replica, wait_until

TUNNELS = 1000
HANDSHAKES_AT_ONCE = 100  # a bound on the connect burst (the test's own accept queue)
BOUND = 20.0  # seconds: a guard against a hang, not a timing assertion


@pytest.fixture(scope="module")
def lb() -> Iterator[BalancerProcess]:
    """Routes on the X-Client header (maglev), so a client keeps its replica."""
    balancer = BalancerProcess("--seed", "3", "--key-source", "header:X-Client")
    try:
        yield balancer.start()
    finally:
        balancer.cleanup()


@pytest.fixture(scope="module")
def short_lb() -> Iterator[BalancerProcess]:
    """Short drain and tunnel idle timeouts."""
    balancer = BalancerProcess("--drain-timeout", "1", "--tunnel-idle-timeout", "1")
    try:
        yield balancer.start()
    finally:
        balancer.cleanup()


def url(lb: BalancerProcess, query: str = "") -> str:
    return f"ws://127.0.0.1:{lb.port}/ws{query}"


def tunnels(lb: BalancerProcess) -> dict[str, int]:
    replicas = lb.get("/status").json()["message"]["replicas"]
    return {r["name"]: r["tunnels"] for r in replicas}


def metric_tunnels(lb: BalancerProcess) -> int:
    lines = lb.get("/metrics").body.decode().splitlines()
    return round(sum(float(ln.split()[-1]) for ln in lines if ln.startswith("ringlb_open_tunnels")))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def close_all(opened: list[ClientConnection]) -> None:
    """Closes every client (one whose tunnel the balancer closed reports that: ignored)."""
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)


def server_of(ws: ClientConnection) -> str:
    assert ws.response is not None
    return ws.response.headers["X-Server-ID"]


async def test_messages_echo_both_ways_text_binary_and_10_mb(lb: BalancerProcess) -> None:
    async with connect(url(lb), max_size=None) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        big = os.urandom(10 * 1024 * 1024)
        started = time.monotonic()
        await ws.send(big)
        assert await asyncio.wait_for(ws.recv(), BOUND) == big
        print(f"\n10 MiB echoed in {time.monotonic() - started:.2f} s")
        assert sum(tunnels(lb).values()) == 1 == metric_tunnels(lb)
    wait_until(lambda: sum(tunnels(lb).values()) == 0, BOUND)


async def test_a_client_keeps_its_replica_across_reconnects(lb: BalancerProcess) -> None:
    """The key source applies to upgrades: the same X-Client lands on the same replica."""
    seen: dict[str, set[str]] = {}
    for client in ("alice", "bob", "carol", "dave"):
        for _ in range(3):
            async with connect(url(lb), additional_headers={"X-Client": client}) as ws:
                seen.setdefault(client, set()).add(server_of(ws))
    assert all(len(servers) == 1 for servers in seen.values()), seen


async def test_1000_concurrent_tunnels_echo_without_error(lb: BalancerProcess) -> None:
    before = rss_mib(lb.pid)
    gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)

    async def open_one(i: int) -> ClientConnection:
        async with gate:
            ws = await connect(
                url(lb), additional_headers={"X-Client": f"c{i}"}, ping_interval=None
            )
            await ws.send(f"hello {i}")
            assert await ws.recv() == f"hello {i}"
            return ws

    started = time.monotonic()
    opened = await asyncio.wait_for(asyncio.gather(*(open_one(i) for i in range(TUNNELS))), 60)
    opening = time.monotonic() - started
    try:
        assert sum(tunnels(lb).values()) == TUNNELS
        peak = rss_mib(lb.pid)

        async def again(i: int, ws: ClientConnection) -> None:
            await ws.send(f"again {i}")
            assert await ws.recv() == f"again {i}"

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(again(i, ws) for i, ws in enumerate(opened))), 60)
        echoing = time.monotonic() - started
    finally:
        await close_all(opened)
    print(
        f"\n{TUNNELS} tunnels: opened in {opening:.2f} s, one echo each in {echoing:.2f} s; "
        f"balancer RSS {before:.1f} -> {peak:.1f} MiB (+{peak - before:.1f})"
    )
    wait_until(lambda: sum(tunnels(lb).values()) == 0, BOUND)


async def test_the_replica_closing_ends_the_tunnel(lb: BalancerProcess) -> None:
    async with connect(url(lb, "?close_after=2")) as ws:
        for word in ("one", "two"):
            await ws.send(word)
            assert await ws.recv() == word
        await asyncio.wait_for(ws.wait_closed(), BOUND)
        assert ws.close_reason == "close_after"
    wait_until(lambda: sum(tunnels(lb).values()) == 0, BOUND)


async def test_a_killed_replica_closes_its_tunnels_and_no_other(lb: BalancerProcess) -> None:
    opened = [await connect(url(lb), additional_headers={"X-Client": f"k{i}"}) for i in range(12)]
    try:
        victim = server_of(opened[0])
        doomed = [ws for ws in opened if server_of(ws) == victim]
        spared = [ws for ws in opened if server_of(ws) != victim]
        os.kill(pid_of_replica(lb.pid, victim), signal.SIGKILL)
        for ws in doomed:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), BOUND)  # the close comes, not a hang
        for ws in spared:
            await ws.send("still here")
            assert await ws.recv() == "still here"
    finally:
        await close_all(opened)


async def test_rm_closes_the_tunnels_of_its_replica_after_the_drain_timeout(
    short_lb: BalancerProcess,
) -> None:
    # Pings keep the tunnels busier than the idle timeout (1 s) while /rm drains.
    opened = [await connect(url(short_lb), ping_interval=0.2) for _ in range(9)]
    try:
        victim = server_of(opened[0])
        started = time.monotonic()
        reply = await asyncio.to_thread(
            short_lb.call, "DELETE", "/rm", {"n": 1, "hostnames": [victim]}
        )
        print(f"\n/rm with open tunnels answered in {time.monotonic() - started:.2f} s")
        assert reply.status == 200 and victim not in reply.json()["message"]["replicas"]
        for ws in opened:
            if server_of(ws) == victim:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), BOUND)
            else:
                await ws.send("kept")
                assert await ws.recv() == "kept"
    finally:
        await close_all(opened)
    await asyncio.to_thread(short_lb.call, "POST", "/add", {"n": 1})


async def test_an_idle_tunnel_is_closed_after_the_tunnel_idle_timeout(
    short_lb: BalancerProcess,
) -> None:
    async with connect(url(short_lb), ping_interval=None) as ws:
        await ws.send("awake")
        assert await ws.recv() == "awake"
        await asyncio.wait_for(ws.wait_closed(), BOUND)  # no byte for 1 s: closed


# -- raw sockets ------------------------------------------------------------------------


def masked_frame(payload: bytes, opcode: int = 1) -> bytes:
    """Returns a client's WebSocket frame (RFC 6455 5.2: masked), for payloads < 126 bytes."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def upgrade_request(path: str = "/ws", *extra: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: lb.test",
        "Connection: Upgrade",
        "Upgrade: websocket",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *extra,
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


class Raw:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=BOUND)
        self.buffer = b""

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; have {self.buffer!r}")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed before a head; have {self.buffer!r}")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), {k.lower(): v for k, v in fields.items()}

    def closed(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def test_an_upgrade_behind_pipelined_requests_then_early_frames(lb: BalancerProcess) -> None:
    """Two plain requests, the upgrade and a frame, in one write: the plain answers come in
    order, then the 101, then the echo of the frame the client sent before it had the 101."""
    raw = Raw(lb.port)
    try:
        plain = b"GET /home HTTP/1.1\r\nHost: lb.test\r\n\r\n"
        raw.sock.sendall(plain + plain + upgrade_request() + masked_frame(b"early bird"))
        for _ in range(2):
            status, fields = raw.head()
            assert status == 200
            assert b"Hello from Server" in raw.read(int(fields["content-length"]))
        status, fields = raw.head()
        assert status == 101, fields
        assert fields["upgrade"].lower() == "websocket" and "sec-websocket-accept" in fields
        assert raw.read(2) == bytes([0x81, len(b"early bird")])  # unmasked text frame
        assert raw.read(len(b"early bird")) == b"early bird"
        raw.sock.sendall(masked_frame(b"then more"))
        assert raw.read(2 + len(b"then more"))[2:] == b"then more"
    finally:
        raw.sock.close()


def test_an_upgrade_the_replica_refuses_is_relayed_and_the_connection_closed(
    lb: BalancerProcess,
) -> None:
    """/ws without a key is refused by the replica (400); /home ignores the Upgrade (200):
    either answer reaches the client as usual, then the connection ends."""
    for request in (
        b"GET /ws HTTP/1.1\r\nHost: lb.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        upgrade_request("/home"),
    ):
        raw = Raw(lb.port)
        try:
            raw.sock.sendall(request)
            status, fields = raw.head()
            assert status in (200, 400) and fields.get("connection") == "close"
            raw.read(int(fields.get("content-length", "0")))
            assert raw.closed()
        finally:
            raw.sock.close()
    assert json.loads(lb.get("/rep").body)["status"] == "successful"
