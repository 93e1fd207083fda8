"""The heartbeat prober (ringlb.control.health.HeartbeatProber) against real servers on
loopback that answer in every way a replica might: well, with an error, with garbage, too
much, never, over HTTPS with a certificate made here."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from certs import TestCA
from ringlb.control.health import MAX_ANSWER, HeartbeatProber
from ringlb.dataplane.tls import client_context
from ringlb.model import Replica

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

OK_KEEP_ALIVE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


async def serve(answer: Answer, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await answer(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    return server, server.sockets[0].getsockname()[1]


def replica(port: int, host: str = "127.0.0.1") -> Replica:
    return Replica("server_1", 1, host, port)


def writes(data: bytes, close: bool = True) -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if close:
            writer.close()
        else:
            await reader.read()  # hold the connection until the prober closes it

    return answer


@pytest.fixture
async def probe_of() -> AsyncIterator[Callable[..., Awaitable[bool]]]:
    servers: list[asyncio.Server] = []

    async def probe_of(
        answer: Answer,
        timeout: float = 2.0,
        tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    ) -> bool:
        server, port = await serve(answer, tls[0] if tls else None)
        servers.append(server)
        prober = HeartbeatProber(timeout, tls[1] if tls else None)
        return await prober.probe(replica(port, "localhost" if tls else "127.0.0.1"))

    yield probe_of
    for server in servers:
        server.close()


async def test_a_200_is_alive_whether_the_replica_closes_or_keeps_the_connection(probe_of) -> None:
    assert await probe_of(writes(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"))
    assert await probe_of(writes(OK_KEEP_ALIVE, close=False), timeout=1.0)
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    assert await probe_of(writes(chunked, close=False), timeout=1.0)
    assert await probe_of(writes(b"HTTP/1.0 200 OK\r\n\r\n"))  # ends with the connection


async def test_anything_but_a_whole_200_is_dead(probe_of) -> None:
    assert not await probe_of(
        writes(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    )
    assert not await probe_of(writes(b"HTTP/1.1 204 No Content\r\n\r\n"))
    assert not await probe_of(writes(b"SSH-2.0-OpenSSH_9.2\r\n"))  # not HTTP
    assert not await probe_of(writes(b"HTTP/1.1 200 OK\r\nContent-Le"))  # head cut short
    assert not await probe_of(writes(b""))  # closed without a word
    endless = b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n" + b"x" * (2 * MAX_ANSWER)
    assert not await probe_of(writes(endless, close=False))


async def test_a_silent_replica_is_dead_after_the_timeout(probe_of) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    loop = asyncio.get_running_loop()
    began = loop.time()
    assert not await probe_of(silent, timeout=0.3)
    assert loop.time() - began < 2.0  # the timeout ended it, not the server


async def test_an_ipv6_replica_gets_a_bracketed_host() -> None:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(OK_KEEP_ALIVE)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "::1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await HeartbeatProber(1.0).probe(replica(port, "::1"))
    finally:
        server.close()
    assert f"\r\nHost: [::1]:{port}\r\n".encode() in heads[0]


async def test_a_closed_port_is_dead() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        assert not await HeartbeatProber(1.0).probe(replica(port))


async def test_over_https_the_certificate_is_verified(tmp_path: Path, probe_of) -> None:
    ca = TestCA(tmp_path)
    issued = ca.issue("replica", "localhost")
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(issued.cert, issued.key)
    answer = writes(OK_KEEP_ALIVE, close=False)
    assert await probe_of(answer, tls=(server_side, client_context(ca.path, verify=True)))

    (tmp_path / "other").mkdir()
    other = TestCA(tmp_path / "other", name="another CA")
    assert not await probe_of(answer, tls=(server_side, client_context(other.path, verify=True)))
    assert await probe_of(answer, tls=(server_side, client_context(other.path, verify=False)))
