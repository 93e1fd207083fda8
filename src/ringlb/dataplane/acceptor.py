"""Listening sockets that take a burst of new connections in one event-loop turn.

uvloop's servers accept one connection per turn of the loop (libuv has done so since 1.45,
libuv/libuv#3696). While each turn relays hundreds of busy streams, a burst of new
connections then waits in the kernel's accept queue for as many turns as there are
connections ahead of it: under 200 slow readers opening at once, a `GET /home` that takes a
millisecond once accepted waited up to a second to be accepted (bench/attack.py,
slow-read-200). An Acceptor takes up to MAX_ACCEPT connections per readiness of its socket,
as HAProxy does (`tune.maxaccept`, 64), and hands each to the loop as an accepted socket,
with TLS when the listener has a context.

Each accepted socket gets the `client_send_buffer` setting as its kernel send buffer. With
the kernel's autotuning a client that does not read still takes about 4 MB of an answer
into its socket before back-pressure reaches the replica: kernel memory per slow reader,
and, while a burst of them connects, each keeps its upstream connection busy (not parked)
until those 4 MB are through, so other requests queue for the replica (1,000 slow readers:
the worst probe 1.5 to 2 s; with 128 KiB, 0.2 to 0.3 s, as HAProxy's; bench/attack.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable

log = logging.getLogger("ringlb.proxy")

MAX_ACCEPT = 64  # connections taken per readiness of a listening socket
# Out of file descriptors or memory: stop accepting this long, then try again (asyncio's
# own servers do the same), instead of spinning on a socket that stays readable.
ACCEPT_RETRY_DELAY = 1.0
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


async def bind(host: str, port: int, backlog: int, reuse_port: bool) -> list[socket.socket]:
    """Returns listening sockets on every address `host` resolves to (all interfaces for
    an empty host), like `loop.create_server`; raises OSError naming the address that
    could not be bound."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    addresses = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
    sockets: list[socket.socket] = []
    try:
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # The IPv4 address, when there is one, gets a socket of its own.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {address!r}: "
                    f"{(exc.strerror or str(exc)).lower()}",
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Acceptor:
    """Accepts connections on `sockets` until closed; each gets a protocol from `factory`
    (behind TLS with `tls`)."""

    def __init__(
        self,
        sockets: list[socket.socket],
        factory: Callable[[], asyncio.Protocol],
        tls: ssl.SSLContext | None = None,
        *,
        send_buffer: int,
    ) -> None:
        self.sockets = sockets
        self._factory = factory
        self._tls = tls
        self._send_buffer = send_buffer
        self._loop = asyncio.get_running_loop()
        # The connections being set up (a TLS one until its handshake ends): the loop keeps
        # only weak references to tasks.
        self._starting: set[asyncio.Task[None]] = set()
        self._closed = False
        for sock in sockets:
            self._watch(sock)

    def _watch(self, sock: socket.socket) -> None:
        if not self._closed:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(MAX_ACCEPT):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up before we took it
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                log.error(
                    "cannot accept connections on port %d: %s; trying again in %g s",
                    sock.getsockname()[1],
                    exc.strerror,
                    ACCEPT_RETRY_DELAY,
                )
                self._loop.remove_reader(sock.fileno())
                self._loop.call_later(ACCEPT_RETRY_DELAY, self._watch, sock)
                return
            if self._send_buffer:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._send_buffer)
            conn.setblocking(False)
            task = self._loop.create_task(self._start(conn))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._factory, conn, ssl=self._tls)
        except OSError as exc:  # ssl.SSLError and TimeoutError among them
            # A TLS handshake that failed or a client that left: its own business. The
            # transport closes the socket (closing it here could close a reused descriptor).
            log.debug("connection not set up: %s", exc)

    def is_serving(self) -> bool:
        return not self._closed

    def close(self) -> None:
        """Stops accepting and closes the listening sockets (accepted connections stay)."""
        self._closed = True
        for sock in self.sockets:
            if sock.fileno() != -1:
                self._loop.remove_reader(sock.fileno())
                sock.close()
