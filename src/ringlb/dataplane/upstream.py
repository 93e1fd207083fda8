"""One keep-alive HTTP/1.1 connection to a replica, at the protocol level (httptools).

A connection carries one exchange at a time: `start` writes a request head and relays the
answer to a `ResponseRelay` as it arrives, then tells the exchange's owner (`Exchange`)
how it ended: `answered(conn, keep_alive)` or `failed(conn, failure)`. It is driven by
callbacks only; `pump` is the one coroutine, for a request body that streams after the
head. A read that holds one whole plain answer (see `ringlb.dataplane.plain`) is relayed
without the parser. A `101 Switching Protocols` ends the exchange with `switched` instead:
the connection leaves its pool and becomes one side of a tunnel.

While the exchange waits on its client (the client does not take the answer's bytes, or
its body has not arrived yet) the connection is "waiting on the client": reads from the
replica pause, the replica's silence is not counted against it (the sweep in
`ringlb.dataplane.deadlines` skips it), and its pool lets another exchange use the slot.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import httptools

from ringlb.dataplane import http11
from ringlb.dataplane.body_stream import BodyStream
from ringlb.dataplane.plain import plain_response
from ringlb.dataplane.relay import ResponseRelay
from ringlb.dataplane.retry import Stage


class UpstreamFailure(Exception):
    """The replica failed this attempt; `stage` says where (see `ringlb.dataplane.retry`).
    `slow` marks a connect that timed out rather than one that was refused."""

    def __init__(self, reason: str, stage: Stage, *, slow: bool = False) -> None:
        super().__init__(reason)
        self.stage = stage
        self.slow = slow


class Pool(Protocol):
    """The pool a connection belongs to (`ringlb.dataplane.pool.UpstreamPool`)."""

    busy: set[UpstreamConnection]  # exchanges in progress on every pool, swept
    tunnels: set[Any]  # open tunnels to the replica (ringlb.dataplane.tunnel)

    def release(self, conn: UpstreamConnection, keep_alive: bool) -> None: ...

    def park(self, conn: UpstreamConnection) -> None: ...

    def unpark(self, conn: UpstreamConnection) -> None: ...

    def discard(self, conn: UpstreamConnection) -> None: ...

    def detach(self, conn: UpstreamConnection) -> None: ...


class Exchange(Protocol):
    """What an upstream connection reports to: the request's `Forwarding`."""

    def answered(self, conn: UpstreamConnection, keep_alive: bool) -> None: ...

    def failed(self, conn: UpstreamConnection, failure: UpstreamFailure) -> None: ...

    def switched(self, conn: UpstreamConnection, header_lines: bytes, rest: bytes) -> None:
        """The replica answered 101 with `header_lines` (serialized, no hop-by-hop field);
        `rest` is what it sent after, already in the new protocol."""
        ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_writable",
        "busy",
        "closed",
        "connection_tokens",
        "exchange",
        "got_bytes",
        "head_lines",
        "head_only",
        "last_read",
        "length",
        "loop",
        "parser",
        "parsing",
        "pool",
        "relay",
        "reused",
        "sent_at",
        "switching",
        "transport",
        "waiting_on_client",
    )

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.busy = pool.busy  # exchanges in progress, swept for the upstream timeout
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.relay: ResponseRelay | None = None
        self.exchange: Exchange | None = None
        self.head_only = False
        self.reused = False
        self.got_bytes = False
        self.closed = False
        self.last_read = 0.0
        self.sent_at = 0.0  # when the current request was sent: latency = last_read - sent_at
        self.parsing = False  # the parser is inside an answer: the rest of it goes there too
        self.waiting_on_client = 0  # reasons the exchange waits on its client (see above)
        self._writable: asyncio.Future[None] | None = None  # a body pump waiting to write
        # The answer's head as it is parsed: forwardable lines, length, Connection tokens.
        self.head_lines = bytearray()
        self.length: int | None = None
        self.connection_tokens: frozenset[bytes] | None = None
        self.switching: bytes | None = None  # the header lines of a 101 being parsed

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
        except httptools.HttpParserUpgrade as upgrade:
            self._switch(data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            self._fail(UpstreamFailure(f"bad response: {exc}", Stage.ANSWER))
            self.close()

    def _switch(self, rest: bytes) -> None:
        """The parser stopped after a 101 (it cannot go on past one: a fresh parser would
        be needed, and the connection will never carry HTTP again)."""
        header_lines, self.switching = self.switching, None
        exchange = self.exchange
        if header_lines is None or exchange is None:
            self._fail(UpstreamFailure("bad response: switched protocols unasked", Stage.ANSWER))
            self.close()
            return
        self._end()
        exchange.switched(self, header_lines, rest)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        self._wake_writer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake_writer()  # a body pump then sees `closed`
        if self.exchange is not None:
            if self.got_bytes:
                failure = UpstreamFailure("connection closed inside the answer", Stage.ANSWER)
            elif self.reused:
                failure = UpstreamFailure("kept-alive connection closed", Stage.STALE)
            else:
                failure = UpstreamFailure("connection closed before the answer", Stage.SENT)
            self._fail(failure)
        self.pool.discard(self)

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
                    self.connection_tokens = (self.connection_tokens or frozenset()) | tokens
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
            if status == 101:
                self.switching = head  # see _switch
            return  # other 1xx interim answers are not relayed; the final one follows
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

    # -- the exchange ------------------------------------------------------------------

    def usable(self) -> bool:
        """Whether a request can be written now. A replica that closed the connection (or
        died) makes the transport close at once but `connection_lost` comes a little later,
        after other callbacks of the same loop turn: `closed` alone is not enough."""
        transport = self.transport
        return not self.closed and transport is not None and not transport.is_closing()

    def start(self, head: bytes, relay: ResponseRelay, exchange: Exchange, head_only: bool) -> None:
        """Sends `head` and relays the answer to `relay`; reports the end to `exchange`.
        `head_only`: the request is a HEAD, so the answer has no body whatever it says."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            failure = UpstreamFailure("pooled connection closed before the request", Stage.UNSENT)
            exchange.failed(self, failure)
            return
        self.relay = relay
        self.exchange = exchange
        self.head_only = head_only
        self.got_bytes = False
        self.last_read = self.sent_at = self.loop.time()
        transport.write(head)
        self.busy.add(self)

    def _finish(self, keep_alive: bool) -> None:
        exchange = self.exchange
        self._end()
        if exchange is not None:
            exchange.answered(self, keep_alive)

    def _fail(self, failure: UpstreamFailure) -> None:
        exchange = self.exchange
        self._end()
        if exchange is not None:
            exchange.failed(self, failure)

    def _end(self) -> None:
        self.relay = None
        self.exchange = None
        self.busy.discard(self)
        if self.waiting_on_client:
            # The answer ended while the client held it up: the connection goes back to
            # its pool (or closes) reading again, holding its slot like any other.
            self.waiting_on_client = 1
            self.client_resumed()
        if self._writable is not None:
            self._wake_writer()

    def abandon(self) -> None:
        """Ends the exchange without a word to its owner (who is gone): the connection is
        mid-answer, so it closes."""
        self.relay = None
        self.exchange = None
        self.busy.discard(self)
        self.close()

    def silent_since(self, now: float, timeout: float) -> bool:
        """Whether the replica has been silent for `timeout` seconds in this exchange (a
        long answer that keeps flowing is fine; time spent waiting on the client is not
        the replica's silence)."""
        return not self.waiting_on_client and now - self.last_read >= timeout

    def time_out(self, timeout: float) -> None:
        stage = Stage.ANSWER if self.got_bytes else Stage.SENT
        self._fail(UpstreamFailure(f"no answer within {timeout:g} s", stage))
        self.close()

    def replica_gone(self) -> None:
        """Fails the exchange: its replica left the set for good (dead, or its node gone:
        an answer may never come, nor a reset), so the request is retried elsewhere now
        rather than after the upstream timeout."""
        stage = Stage.ANSWER if self.got_bytes else Stage.SENT
        self._fail(UpstreamFailure("the replica is gone", stage))
        self.close()

    # -- waiting on the client -----------------------------------------------------------

    def client_paused(self) -> None:
        """The exchange waits on its client: stop reading the replica, free the slot."""
        self.waiting_on_client += 1
        if self.waiting_on_client == 1:
            if self.transport is not None and not self.closed:
                self.transport.pause_reading()
            self.pool.park(self)

    def client_resumed(self) -> None:
        if not self.waiting_on_client:
            return
        self.waiting_on_client -= 1
        if not self.waiting_on_client:
            self.last_read = self.loop.time()
            self.pool.unpark(self)
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    # -- a body that streams after the head ------------------------------------------------

    async def pump(self, body: BodyStream) -> None:
        """Sends `body` as it arrives; returns when it is sent, when the exchange ended
        first (the replica answered early, or failed), or when the connection closed.
        Raises BodyAborted when the client's body breaks off."""
        transport = self.transport
        assert transport is not None
        exchange = self.exchange
        chunked = body.length is None
        while self.exchange is exchange and not self.closed:
            if body.ready:
                chunk = await body.next()
            else:
                self.client_paused()
                try:
                    chunk = await body.next()
                finally:
                    if self.exchange is exchange:  # else `_end` already resumed
                        self.client_resumed()
            if self.exchange is not exchange or self.closed:
                return
            if chunk is None:
                if chunked:
                    transport.write(b"0\r\n\r\n")
                return
            transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            self.last_read = self.loop.time()  # sending counts as activity for the timeout
            if self._writable is not None:
                await self._writable

    def _wake_writer(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
