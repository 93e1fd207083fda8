"""Pooled keep-alive HTTP/1.1 connections to replicas, at the protocol level (httptools).

One `UpstreamPool` per replica holds idle connections and caps how many are open, so a
burst of clients never turns into a burst of connects (which would overflow a replica's
accept queue and look like a failure). A connection carries one request at a time.

An exchange is driven by callbacks (`start`, then `on_done`), so the common case, an idle
pooled connection and a small request, needs no task and no future; `exchange` wraps the
same machinery for coroutines (connecting, waiting for the pool, streaming a body). A read
that holds one whole plain answer (see `ringlb.dataplane.plain`) is relayed without the parser.

Exchanges in progress sit in a set the Proxy sweeps (`expire_exchanges`) instead of each
arming a timer: the timeout is enforced to within the sweep's tick.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import httptools

from ringlb.dataplane import http11
from ringlb.dataplane.body_stream import BodyStream
from ringlb.dataplane.plain import plain_response
from ringlb.dataplane.relay import ResponseRelay
from ringlb.model import Replica

Done = Callable[[bool, "UpstreamFailure | None"], None]


class UpstreamFailure(Exception):
    """The replica failed this exchange (refused, reset, closed early, timed out, garbage).

    `stale` is true when a reused keep-alive connection closed before any byte of the
    answer arrived: the replica probably closed an idle connection, not crashed. `slow` is
    true for a connect that timed out, as opposed to one that was refused. `sent` is true
    once the request was written to the replica: it may have acted on it.
    """

    def __init__(
        self, reason: str, *, stale: bool = False, slow: bool = False, sent: bool = False
    ) -> None:
        super().__init__(reason)
        self.stale = stale
        self.slow = slow
        self.sent = sent


class Overloaded(Exception):
    """No capacity for this request now (a full queue, or a wait that timed out). Not the
    replica's fault: it is not ejected, and the client is told to retry later (503)."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a replica; relays each answer to a ResponseRelay."""

    def __init__(self, pool: UpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.relay: ResponseRelay | None = None
        self.on_done: Done | None = None
        self.head_only = False
        self.reused = False
        self.got_bytes = False
        self.closed = False
        self.last_read = 0.0
        self.sent_at = 0.0  # when the current request was sent: latency = last_read - sent_at
        self.timeout = 0.0
        self.parsing = False  # the parser is inside an answer: the rest of it goes there too
        self.writable = asyncio.Event()
        self.writable.set()
        # The answer's head as it is parsed: forwardable lines, length, Connection tokens.
        self.head_lines = bytearray()
        self.length: int | None = None
        self.connection_tokens: set[bytes] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last_read = self.loop.time()
        relay = self.relay
        if relay is not None and not self.parsing:
            status = plain_response(data)
            if status and relay.whole(status, data):
                self._finish(True)
                return
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
        if self.on_done is not None:
            stale = self.reused and not self.got_bytes
            self._fail(UpstreamFailure("connection closed before the answer", stale=stale))

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = True

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower in http11.HOP_BY_HOP:
            if lower == b"content-length":
                self.length = int(value) if value.isdigit() else None
            elif lower == b"connection":
                tokens = http11.named_by_connection(value)
                if tokens:
                    self.connection_tokens = (self.connection_tokens or set()) | tokens
            return
        self.head_lines += b"%s: %s\r\n" % (name, value)

    def on_headers_complete(self) -> None:
        relay = self.relay
        status = self.parser.get_status_code()
        head, length = bytes(self.head_lines), self.length
        if self.connection_tokens:
            head = http11.drop_named_headers(head, self.connection_tokens)
        self.head_lines.clear()
        self.length = None
        self.connection_tokens = None
        if relay is None or status < 200:
            return  # 1xx interim answers are not relayed; the final one follows
        relay.start(status, head, length)
        if self.head_only:
            # The parser cannot be told that a HEAD answer has no body, so it would wait
            # for Content-Length bytes that never come: finish here, do not reuse.
            relay.end()
            self._finish(False)

    def on_body(self, body: bytes) -> None:
        if self.relay is not None:
            self.relay.body(body)

    def on_message_complete(self) -> None:
        self.parsing = False
        relay = self.relay
        if relay is not None and relay.status:  # the final answer's head was seen
            relay.end()
            self._finish(self.parser.should_keep_alive())

    # -- exchange --------------------------------------------------------------------------

    def usable(self) -> bool:
        """Whether a request can be written now. A replica that closed the connection (or
        died) makes the transport close at once but `connection_lost` comes a little later,
        after other callbacks of the same loop turn: `closed` alone is not enough."""
        transport = self.transport
        return not self.closed and transport is not None and not transport.is_closing()

    def start(
        self, request: bytes, relay: ResponseRelay, head_only: bool, timeout: float, on_done: Done
    ) -> None:
        """Sends `request` and relays the answer; calls `on_done(keep_alive, None)` at its
        end, or `on_done(False, failure)`. `timeout` bounds every silence of the replica."""
        if not self.usable():
            # Nothing was sent: a stale connection, so the request may go elsewhere or anew.
            on_done(False, UpstreamFailure("connection closed before the request", stale=True))
            return
        self.relay = relay
        self.on_done = on_done
        self.head_only = head_only
        self.got_bytes = False
        self.timeout = timeout
        self.last_read = self.sent_at = self.loop.time()
        self.transport.write(request)  # type: ignore[union-attr]  # usable() saw it
        self.pool.busy.add(self)

    def _finish(self, keep_alive: bool) -> None:
        on_done = self.on_done
        self._end_exchange()
        if on_done is not None:
            on_done(keep_alive, None)

    def _fail(self, exc: UpstreamFailure) -> None:
        exc.sent = True  # only an exchange in progress can fail here: the request went out
        on_done = self.on_done
        self._end_exchange()
        if on_done is not None:
            on_done(False, exc)

    def _end_exchange(self) -> None:
        self.relay = None
        self.on_done = None
        self.pool.busy.discard(self)
        self.writable.set()  # a body pump still running must notice the answer is done

    def expired(self, now: float) -> bool:
        """Whether the replica has been silent for `timeout` seconds in this exchange (a
        long answer that keeps flowing is fine)."""
        return now - self.last_read >= self.timeout

    def time_out(self) -> None:
        self._fail(UpstreamFailure(f"no answer within {self.timeout:g} s"))
        self.close()

    async def exchange(
        self,
        request: bytes,
        relay: ResponseRelay,
        head_only: bool,
        timeout: float,
        body: BodyStream | None = None,
    ) -> bool:
        """`start` as a coroutine, plus a body streamed after the head; returns whether the
        connection can be reused. Raises UpstreamFailure."""
        done: asyncio.Future[bool] = self.loop.create_future()

        def on_done(keep_alive: bool, failure: UpstreamFailure | None) -> None:
            if done.done():
                return
            if failure is None:
                done.set_result(keep_alive)
            else:
                done.set_exception(failure)

        self.start(request, relay, head_only, timeout, on_done)
        sent_all = True if body is None else await self._pump(body, done)
        return await done and sent_all

    async def _pump(self, body: BodyStream, done: asyncio.Future[bool]) -> bool:
        """Sends the body as it arrives; returns False if the replica answered first."""
        assert self.transport is not None
        chunked = body.length is None
        while True:
            if done.done():
                return False  # answered (or failed, which `exchange` then raises)
            if self.closed:
                raise UpstreamFailure("connection closed while sending the request body", sent=True)
            chunk = await body.next()
            if chunk is None:
                break
            self.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            self.last_read = self.loop.time()  # sending counts as activity for the timeout
            if not self.writable.is_set():
                await self.writable.wait()
        if chunked and not self.closed:
            self.transport.write(b"0\r\n\r\n")
        return True

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections to one replica, at most `size` open at once."""

    def __init__(
        self,
        replica: Replica,
        size: int,
        connect_timeout: float,
        queue_size: int = 1024,
        queue_timeout: float = 5.0,
        busy: set[UpstreamConnection] | None = None,
    ) -> None:
        self.replica = replica
        self._size = size  # also the cap on concurrent requests to this replica
        self._connect_timeout = connect_timeout
        self._queue_size = queue_size
        self._queue_timeout = queue_timeout
        self._idle: list[UpstreamConnection] = []
        self._open = 0
        # Connections with an exchange in progress; shared by every pool of a Proxy, which
        # sweeps it (see expire_exchanges).
        self.busy: set[UpstreamConnection] = busy if busy is not None else set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def take_idle(self) -> UpstreamConnection | None:
        """Returns an idle open connection at once, or None."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.usable():
                conn.reused = True
                return conn
        return None

    async def acquire(self, fresh: bool = False) -> UpstreamConnection:
        """Returns an idle connection, or a new one when below the cap; otherwise waits in a
        bounded queue for at most `queue_timeout`. Raises UpstreamFailure or Overloaded."""
        may_connect = True
        deadline = asyncio.get_running_loop().time() + self._queue_timeout
        while True:
            if self._closed:
                raise UpstreamFailure("replica left the ring")
            if not fresh:
                conn = self.take_idle()
                if conn is not None:
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
            loop = asyncio.get_running_loop()
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

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        self._open += 1
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: UpstreamConnection(self, loop), self.replica.host, self.replica.port
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
            if self._waiters:
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


def expire_exchanges(busy: set[UpstreamConnection], now: float) -> None:
    """Fails every exchange in `busy` whose replica has been silent for its timeout."""
    for conn in [c for c in busy if c.expired(now)]:
        conn.time_out()
