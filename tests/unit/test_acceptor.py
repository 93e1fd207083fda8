"""The listening sockets, on uvloop (the loop `ringlb serve` runs when it is installed): a
burst of new connections is taken in within a few turns of the loop (uvloop's own servers
take one per turn), a busy port is refused with its address, and running out of file
descriptors pauses accepting instead of failing for good."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import resource
import socket
from collections.abc import Callable, Coroutine, Iterator

import pytest

from ringlb.dataplane.acceptor import ACCEPT_RETRY_DELAY, MAX_ACCEPT, Acceptor, bind

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


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def accepting() -> tuple[Acceptor, list[asyncio.Transport]]:
    made: list[asyncio.Transport] = []
    acceptor = Acceptor(await bind("127.0.0.1", 0, 4096, False), lambda: Counted(made))
    return acceptor, made


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

