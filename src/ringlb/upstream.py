"""Pooled keep-alive HTTP/1.1 connections to replicas, at the protocol level (httptools).

One `UpstreamPool` per replica holds idle connections and caps how many are open, so a
burst of clients never turns into a burst of connects (which would overflow a replica's
accept queue and look like a failure). A connection carries one request at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools

from ringlb.body_stream import BodyStream
from ringlb.relay import ResponseRelay
from ringlb.replica import Replica


class UpstreamFailure(Exception):
    """The replica failed this exchange (refused, reset, closed early, timed out, garbage).

    `stale` is true when a reused keep-alive connection closed before any byte of the
    answer arrived: the replica probably closed an idle connection, not crashed. `slow` is
    true for a connect that timed out, as opposed to one that was refused.
    """

    def __init__(self, reason: str, *, stale: bool = False, slow: bool = False) -> None:
        super().__init__(reason)
        self.stale = stale
        self.slow = slow


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection; `exchange` sends a request and relays the answer."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[bool] | None = None
        self.relay: ResponseRelay | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_only = False
        self.reused = False
        self.got_bytes = False
        self.closed = False
        self.last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last_read = asyncio.get_running_loop().time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamFailure(f"bad response: {exc}"))
            self.close()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()  # wakes a body pump, which then sees `closed`
        self.pool.discard(self)
        if self.waiter is not None and not self.waiter.done():
            stale = self.reused and not self.got_bytes
            self._fail(UpstreamFailure("connection closed before the answer", stale=stale))

    # -- httptools callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        relay = self.relay
        if relay is None:
            return
        status = self.parser.get_status_code()
        if status < 200:
            self.headers = []  # 1xx interim answers are not relayed; the final one follows
            return
        relay.start(status, self.headers)
        self.headers = []
        if self.head_only:
            # The parser cannot be told that a HEAD answer has no body, so it would wait
            # for Content-Length bytes that never come: finish here, do not reuse.
            self._finish(keep_alive=False)

    def on_body(self, body: bytes) -> None:
        if self.relay is not None:
            self.relay.body(body)

    def on_message_complete(self) -> None:
        if self.relay is not None and self.relay.started:
            self.relay.end()
            self._finish(self.parser.should_keep_alive())

    # -- exchange --------------------------------------------------------------------------

    def _finish(self, keep_alive: bool) -> None:
        waiter = self.waiter
        self.relay = None
        if waiter is not None and not waiter.done():
            waiter.set_result(keep_alive)
        self.writable.set()  # a body pump still running must notice the answer is done

    def _fail(self, exc: UpstreamFailure) -> None:
        self.relay = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    async def exchange(
        self,
        request: bytes,
        relay: ResponseRelay,
        head_only: bool,
        timeout: float,
        body: BodyStream | None = None,
    ) -> bool:
        """Sends `request`, then `body` if the body is streamed, and relays the answer.

        Returns whether the connection can be reused. `timeout` bounds every silence of
        the replica (time spent sending it a body counts as activity).
        """
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.relay = relay
        self.headers = []
        self.head_only = head_only
        self.got_bytes = False
        self.last_read = loop.time()
        assert self.transport is not None
        self.transport.write(request)
        self._timer = loop.call_later(timeout, self._on_timeout, timeout)
        try:
            sent_all = True if body is None else await self._pump(body)
            keep_alive = await self.waiter
            return keep_alive and sent_all
        finally:
            self._timer.cancel()
            self.waiter = None

    async def _pump(self, body: BodyStream) -> bool:
        """Sends the body as it arrives; returns False if the replica answered first."""
        assert self.transport is not None and self.waiter is not None
        chunked = body.length is None
        loop = asyncio.get_running_loop()
        while True:
            if self.waiter.done():
                return False  # answered (or failed, which `exchange` then raises)
            if self.closed:
                raise UpstreamFailure("connection closed while sending the request body")
            chunk = await body.next()
            if chunk is None:
                break
            self.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            self.last_read = loop.time()
            if not self.writable.is_set():
                await self.writable.wait()
        if chunked and not self.closed:
            self.transport.write(b"0\r\n\r\n")
        return True

    def _on_timeout(self, timeout: float) -> None:
        if self.waiter is None or self.waiter.done():
            return
        # Re-arm instead of resetting a timer on every read: a long answer that keeps
        # flowing is fine; only `timeout` seconds without a byte is a failure.
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self.last_read
        if quiet < timeout:
            self._timer = loop.call_later(timeout - quiet, self._on_timeout, timeout)
            return
        self._fail(UpstreamFailure(f"no answer within {timeout:g} s"))
        self.close()


class UpstreamPool:
    """Keep-alive connections to one replica, at most `size` open at once."""

    def __init__(self, replica: Replica, size: int, connect_timeout: float) -> None:
        self.replica = replica
        self._size = size
        self._connect_timeout = connect_timeout
        self._idle: list[UpstreamConnection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def acquire(self, fresh: bool = False) -> UpstreamConnection:
        """Returns an idle connection, or a new one when below the cap; waits otherwise."""
        may_connect = True
        while True:
            if self._closed:
                raise UpstreamFailure("replica left the ring")
            if not fresh:
                while self._idle:
                    conn = self._idle.pop()
                    if not conn.closed:
                        conn.reused = True
                        return conn
            if self._open < self._size and (may_connect or self._open == 0):
                try:
                    return await self._connect()
                except UpstreamFailure as exc:
                    if not exc.slow or self._open == 0:
                        raise
                    # The replica is serving our other connections: this connect lost to a
                    # saturated event loop, not to a dead replica. Wait for a pooled one.
                    may_connect = False
                    continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        self._open += 1
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self), self.replica.host, self.replica.port
                ),
                self._connect_timeout,
            )
        except TimeoutError:
            self._open -= 1
            self._wake_one()
            raise UpstreamFailure(
                f"connect timed out after {self._connect_timeout:g} s", slow=True
            ) from None
        except OSError as exc:
            self._open -= 1
            self._wake_one()
            raise UpstreamFailure(f"connect failed: {exc.strerror or exc}") from None
        conn.reused = False
        return conn

    def release(self, conn: UpstreamConnection, keep_alive: bool) -> None:
        """Returns `conn` to the pool, or closes it when it cannot carry another request."""
        if keep_alive and not conn.closed and not self._closed:
            self._idle.append(conn)
            self._wake_one()
        else:
            conn.close()

    def discard(self, conn: UpstreamConnection) -> None:
        """Forgets a closed connection (called from its connection_lost)."""
        self._open -= 1
        if conn in self._idle:
            self._idle.remove(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Closes idle connections now; busy ones close when their exchange ends."""
        self._closed = True
        for conn in list(self._idle):
            conn.close()
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
