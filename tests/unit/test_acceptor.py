"""The listening sockets, on uvloop (the loop `ringlb serve` runs when it is installed): a
burst of new connections is taken in within a few turns of the loop (uvloop's own servers
take one per turn), a busy port is refused with its address, running out of file
descriptors pauses accepting instead of failing for good, each accepted socket gets the
send buffer asked for, and a closed client connection is freed at once (not left to the
cyclic garbage collector)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import resource
import socket
from collections.abc import Callable, Coroutine, Iterator

import pytest

from engine_rig import EngineRig, turns
from ringlb.dataplane.acceptor import ACCEPT_RETRY_DELAY, MAX_ACCEPT, Acceptor, bind
from ringlb.dataplane.connection import BOTH, ClientConnection

uvloop = pytest.importorskip("uvloop")

BURST = MAX_ACCEPT


def on_uvloop(test: Callable[[], Coroutine[None, None, None]]) -> Callable[[], None]:
    """Runs the coroutine function `test` on a uvloop loop of its own."""

    @functools.wraps(test)
    def run() -> None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(test())

    return run


class Counted(asyncio.Protocol):
    made: list[asyncio.Transport]

    def __init__(self, made: list[asyncio.Transport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)  # type: ignore[arg-type]


@contextlib.contextmanager
def clients(port: int, n: int) -> Iterator[list[socket.socket]]:
    """`n` connections to `port`, complete in the kernel's accept queue (a blocking connect
    on loopback needs no turn of the loop), closed at the end."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


async def accepting(send_buffer: int = 0) -> tuple[Acceptor, list[asyncio.Transport]]:
    made: list[asyncio.Transport] = []
    sockets = await bind("127.0.0.1", 0, 4096, False)
    acceptor = Acceptor(sockets, lambda: Counted(made), send_buffer=send_buffer)
    return acceptor, made


@on_uvloop
async def test_each_accepted_socket_gets_the_send_buffer_asked_for() -> None:
    plain = socket.create_server(("127.0.0.1", 0))  # the kernel's own choice
    with plain, socket.create_connection(plain.getsockname()):
        accepted, _ = plain.accept()
        with accepted:
            kernels = accepted.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    assert kernels != 2 * 128 * 1024
    for asked, expected in ((128 * 1024, 2 * 128 * 1024), (0, kernels)):  # Linux doubles it
        acceptor, made = await accepting(send_buffer=asked)
        port = acceptor.sockets[0].getsockname()[1]
        try:
            with clients(port, 2):
                await turns(5)
                assert len(made) == 2
                for transport in made:
                    sock = transport.get_extra_info("socket")
                    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == expected
        finally:
            acceptor.close()
            for transport in made:
                transport.close()
            await turns(2)


@on_uvloop
async def test_a_burst_of_connections_is_taken_in_within_a_few_turns() -> None:
    acceptor, made = await accepting()
    port = acceptor.sockets[0].getsockname()[1]
    try:
        with clients(port, BURST):
            # One turn accepts them, the next makes their connections, a third ends the
            # tasks; uvloop's servers would have accepted 5 by then.
            await turns(5)
            assert len(made) == BURST
    finally:
        acceptor.close()
        for transport in made:
            transport.close()
    assert not acceptor.is_serving() and acceptor.sockets[0].fileno() == -1


@on_uvloop
async def test_a_port_in_use_is_refused_with_its_address() -> None:
    acceptor, _ = await accepting()
    port = acceptor.sockets[0].getsockname()[1]
    try:
        with pytest.raises(OSError, match=rf"bind on address \('127.0.0.1', {port}\).*in use"):
            await bind("127.0.0.1", port, 16, False)
    finally:
        acceptor.close()


def lowest_free_descriptor() -> int:
    fd = os.dup(0)
    os.close(fd)
    return fd


@on_uvloop
async def test_out_of_descriptors_pauses_accepting_then_takes_the_waiting_ones_in() -> None:
    acceptor, made = await accepting()
    port = acceptor.sockets[0].getsockname()[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with clients(port, 3):
            # No descriptor left for an accepted connection: accept() fails with EMFILE.
            resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free_descriptor(), hard))
            try:
                await turns(20)
                assert made == []
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            await asyncio.sleep(ACCEPT_RETRY_DELAY + 0.5)
            assert len(made) == 3
    finally:
        acceptor.close()
        for transport in made:
            transport.close()


@on_uvloop
async def test_a_closed_client_connection_is_freed_without_the_cyclic_collector() -> None:
    # With TLS a connection holds uvloop's 256 KiB buffer and OpenSSL's state: left in a
    # reference cycle, closed ones piled up to 200 MiB between two passes of the collector.
    rig = EngineRig()
    acceptor = await rig.listener.listen("127.0.0.1", 0, BOTH)
    port = acceptor.sockets[0].getsockname()[1]
    gc.collect()
    gc.disable()
    try:
        with clients(port, 3):
            await turns(5)
            assert len(rig.listener.clients) == 3
        for _ in range(50):  # their connection_lost
            await turns(1)
            if not rig.listener.clients:
                break
        assert not rig.listener.clients
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, ClientConnection)]
        assert left == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        rig.listener.close()
