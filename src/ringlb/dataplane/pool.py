"""Pooled keep-alive connections to replicas: one `UpstreamPool` per replica.

A pool holds idle connections and caps how many exchanges use the replica at once (`size`),
so a burst of clients never turns into a burst of connects (which would overflow a
replica's accept queue and look like a failure). Beyond the cap, requests wait in a bounded
queue for a bounded time, then get 503.

An exchange that waits on its client (see `ringlb.dataplane.upstream`) is parked: it keeps
its connection but not its slot, so slow clients cannot keep the others from a replica.
Like HAProxy, the balancer then opens more connections to the replica; what bounds them is
the number of client connections (`max_connections`).

A connection that became a tunnel (a WebSocket, see `ringlb.dataplane.tunnel`) is detached:
it holds no slot, and the pool keeps its tunnel only to close it when the replica leaves.
A pool for replicas that speak HTTPS opens its connections with its `tls` context.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections import deque
from typing import Protocol

from ringlb.dataplane.retry import Stage
from ringlb.dataplane.upstream import UpstreamConnection, UpstreamFailure
from ringlb.model import Replica

# Kernel receive buffer of a connection to a replica (Linux doubles it): reads are at most
# about twice this, whatever the answer's size.
READ_BUFFER = 16 * 1024


class Closable(Protocol):
    def close(self) -> None: ...


class Overloaded(Exception):
    """No capacity for this request now (a full queue, or a wait that timed out). Not the
    replica's fault: it is not ejected, and the client is told to retry later (503)."""


class UpstreamPool:
    """Keep-alive connections to one replica, at most `size` exchanges active at once."""

    def __init__(
        self,
        replica: Replica,
        size: int,
        connect_timeout: float,
        queue_size: int,
        queue_timeout: float,
        busy: set[UpstreamConnection],
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.replica = replica
        self._tls = tls
        self._size = size
        self._connect_timeout = connect_timeout
        self._queue_size = queue_size
        self._queue_timeout = queue_timeout
        # Exchanges in progress on every pool of the data plane (swept for timeouts).
        self.busy = busy
        self._idle: list[UpstreamConnection] = []
        self._open = 0
        self._parked: set[UpstreamConnection] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self.tunnels: set[Closable] = set()  # open tunnels to this replica

    def take_idle(self) -> UpstreamConnection | None:
        """Returns an idle open connection at once, or None."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if not conn.closed and transport is not None and not transport.is_closing():
                return conn
        return None

    def _has_room(self) -> bool:
        return self._open - len(self._parked) < self._size

    async def acquire(self, fresh: bool) -> UpstreamConnection:
        """Returns an idle connection (unless `fresh`), or a new one when there is room;
        otherwise waits in a bounded queue for at most `queue_timeout`. Raises
        UpstreamFailure (stage CONNECT) or Overloaded."""
        loop = asyncio.get_running_loop()
        may_connect = True
        deadline = loop.time() + self._queue_timeout
        while True:
            if self._closed:
                raise UpstreamFailure("replica left the ring", Stage.CONNECT)
            if not fresh:
                conn = self.take_idle()
                if conn is not None:
                    return conn
            if self._has_room() and (may_connect or self._open == 0):
                try:
                    return await self._connect(loop)
                except UpstreamFailure as exc:
                    if not exc.slow or self._open == 0:
                        raise
                    # The replica is serving our other connections: this connect lost to a
                    # saturated event loop, not to a dead replica. Wait for a pooled one.
                    may_connect = False
                    fresh = False
                    continue
            if len(self._waiters) >= self._queue_size:
                raise Overloaded(f"{self._queue_size} requests already wait for this replica")
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise Overloaded(
                    f"no free connection to this replica within {self._queue_timeout:g} s"
                ) from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> UpstreamConnection:
        self._open += 1
        try:
            _, conn = await asyncio.wait_for(self._open_socket(loop), self._connect_timeout)
        except TimeoutError:
            self._gone()
            raise UpstreamFailure(
                f"connect timed out after {self._connect_timeout:g} s", Stage.CONNECT, slow=True
            ) from None
        except OSError as exc:
            self._gone()
            raise UpstreamFailure(f"connect failed: {exc.strerror or exc}", Stage.CONNECT) from None
        return conn

    async def _open_socket(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.BaseTransport, UpstreamConnection]:
        family, address = await self._address(loop)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # A small receive buffer bounds each read from the replica, hence what one slow
            # client can make us hold (a read it does not take stays in our memory).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_BUFFER)
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            tls = self._tls
            return await loop.create_connection(
                lambda: UpstreamConnection(self, loop),
                sock=sock,
                ssl=tls,
                server_hostname=self.replica.host if tls is not None else None,
            )
        except BaseException:
            sock.close()
            raise

    async def _address(self, loop: asyncio.AbstractEventLoop) -> tuple[int, tuple]:
        """Returns the replica's address family and socket address. An IP address needs no
        lookup (a lookup runs in a thread: under a burst of connects, a queue)."""
        host, port = self.replica.host, self.replica.port
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            family, _, _, _, address = (
                await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            )[0]
            return family, address
        return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), (host, port)

    def adopt(self, conn: UpstreamConnection) -> None:
        """Counts in a connection opened elsewhere (in-memory tests), as an idle one."""
        self._open += 1
        self.release(conn, keep_alive=True)

    def release(self, conn: UpstreamConnection, keep_alive: bool) -> None:
        """Returns `conn` to the pool, or closes it when it cannot carry another request."""
        if keep_alive and not conn.closed and not self._closed:
            conn.reused = True
            self._idle.append(conn)
            if self._waiters:
                self._wake_one()
        else:
            conn.close()

    def park(self, conn: UpstreamConnection) -> None:
        """`conn`'s exchange waits on its client: its slot goes to whoever waits for one."""
        self._parked.add(conn)
        if self._waiters:
            self._wake_one()

    def unpark(self, conn: UpstreamConnection) -> None:
        """`conn`'s exchange goes on: it counts against the cap again (which it may exceed
        for a while: it is not stopped for it)."""
        self._parked.discard(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        """Forgets a closed connection (called from its connection_lost)."""
        self._parked.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
        self._gone()

    def detach(self, conn: UpstreamConnection) -> None:
        """`conn` became a tunnel: it no longer counts against the cap."""
        self._parked.discard(conn)
        self._gone()

    def _gone(self) -> None:
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Closes idle connections and tunnels now; busy ones close when their exchange
        ends."""
        self._closed = True
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()
        for tunnel in list(self.tunnels):
            tunnel.close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


class UpstreamPools:
    """The pools of one data plane, by replica, made on first use."""

    def __init__(
        self,
        size: int,
        connect_timeout: float,
        queue_size: int,
        queue_timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._tls = tls  # replicas speak HTTPS
        self._size = size
        self._connect_timeout = connect_timeout
        self._queue_size = queue_size
        self._queue_timeout = queue_timeout
        self.by_replica: dict[Replica, UpstreamPool] = {}
        self.busy: set[UpstreamConnection] = set()  # exchanges in progress, on every pool

    def add(self, replica: Replica) -> UpstreamPool:
        pool = self.by_replica[replica] = UpstreamPool(
            replica,
            self._size,
            self._connect_timeout,
            self._queue_size,
            self._queue_timeout,
            self.busy,
            self._tls,
        )
        return pool

    def forget(self, replica: Replica) -> None:
        """Closes the pool of a replica that left the set for good, and fails the exchanges
        still held on it (a replica removed by /rm has had its drain already)."""
        pool = self.by_replica.pop(replica, None)
        if pool is not None:
            pool.close()
            for conn in [c for c in self.busy if c.pool is pool]:
                conn.replica_gone()

    def close(self) -> None:
        for pool in self.by_replica.values():
            pool.close()
        self.by_replica.clear()
