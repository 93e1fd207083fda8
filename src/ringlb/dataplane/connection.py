"""ClientConnection: one client's HTTP/1.1 connection, parsed with httptools.

It turns bytes into requests (enforcing header limits, deadlines and body limits),
answers them strictly in order (pipelining), and hands each proxied request to the
`Proxy`. Admin paths go to the `AdminAPI` instead. Request heads are rebuilt for the
replica while they are parsed, so forwarding costs one join, not a second pass.

A read that holds exactly one plain request (see `ringlb.dataplane.plain`: a small GET or HEAD with
ordinary headers) skips the parser: it is forwarded as received, with our fields appended.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools

from ringlb import contract
from ringlb.dataplane import http11
from ringlb.dataplane.body_stream import BodyStream
from ringlb.dataplane.plain import plain_request, request_fields

if TYPE_CHECKING:
    from ringlb.dataplane.forward import Proxy
    from ringlb.dataplane.upstream import UpstreamConnection

log = logging.getLogger("ringlb.dataplane.forward")

MAX_PIPELINE = 32  # queued requests per connection before we stop reading from it
STREAM_THRESHOLD = 256 * 1024  # request bodies above this are forwarded while they arrive
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# What on_header does with a field, by lower-case name; every other field is forwarded.
_DROP, _HOST, _FORWARDED_FOR, _VIA, _LENGTH, _CHUNKED, _CONNECTION, _EXPECT = range(8)
_SPECIAL = {name: _DROP for name in http11.REWRITTEN_REQUEST_FIELDS} | {
    b"host": _HOST,
    b"x-forwarded-for": _FORWARDED_FOR,
    b"via": _VIA,
    b"x-forwarded-proto": _DROP,  # replaced by ours
    b"content-length": _LENGTH,
    b"transfer-encoding": _CHUNKED,
    b"connection": _CONNECTION,
    b"expect": _EXPECT,  # answered here (100 Continue), not by the replica
}

# Deadline kinds (see Proxy.run_deadlines).
IDLE, HEADERS, BODY = 1, 2, 3

# What a listener serves: admin endpoints and proxying (the contract's single port), or
# only one of them (with `admin_port` set, the admin API gets a listener of its own).
BOTH, PROXY_ONLY, ADMIN_ONLY = "both", "proxy", "admin"


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What a client connection may take: deadlines (s) and header sizes."""

    header_timeout: float = 10.0  # whole request line + headers, however slowly sent
    body_timeout: float = 30.0  # longest pause between two pieces of a request body
    idle_timeout: float = 60.0  # keep-alive connection with no request in progress
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100


class ProxiedRequest:
    __slots__ = (
        "body",
        "chunked",
        "connection_tokens",
        "expect_continue",
        "forwarded_for",
        "has_host",
        "head_lines",
        "headers",
        "keep_alive",
        "key",
        "length",
        "method",
        "path",
        "raw_head",
        "stream",
        "target",
        "version",
        "via",
    )

    def __init__(
        self, method: str = "", target: bytes = b"", path: str = "", raw_head: bytes | None = None
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_lines = bytearray()  # forwardable header lines, serialized
        self.body = bytearray()
        self.keep_alive = True
        self.key: int | None = None
        self.length: int | None = None
        self.chunked = False
        self.has_host = False
        self.expect_continue = False
        self.forwarded_for = b""
        self.via = b""
        self.connection_tokens: frozenset[bytes] | None = None
        self.stream: BodyStream | None = None  # set when the body is forwarded as it comes
        self.raw_head = raw_head  # a plain request, as received (nothing parsed)

    def fields(self) -> list[tuple[bytes, bytes]]:
        """Returns the header fields (a plain request's are read only when asked for)."""
        if self.raw_head is not None and not self.headers:
            self.headers = request_fields(self.raw_head)
        return self.headers


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order."""

    def __init__(self, proxy: Proxy, loop: asyncio.AbstractEventLoop, role: str = BOTH) -> None:
        self.proxy = proxy
        self.loop = loop
        self.admin_paths = frozenset() if role == PROXY_ONLY else proxy.admin.paths
        self.admin_only = role == ADMIN_ONLY
        self.limits = proxy.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b"unknown"
        self.local = b"localhost"
        self.forwarded = b""  # the fields we add to a plain request head, with its last CRLF
        self.current: ProxiedRequest | None = None
        self.admin_request = False
        self.refused = False
        self.queue: deque[ProxiedRequest | tuple[int, str]] = deque()
        self.busy = False  # an answer is being produced (by the fast path or a task)
        self.proxying = False  # ... and it is a proxied one, counted in Proxy.inflight
        self.worker: asyncio.Task[None] | None = None
        self.closing = False
        self.pause_reasons: set[str] = set()
        self.deadline = 0.0  # 0: none; else Proxy.now value after which `deadline_kind` fires
        self.deadline_kind = 0
        self.upstream: UpstreamConnection | None = None  # the replica answering right now
        self.upstream_paused: UpstreamConnection | None = None
        self.header_bytes = 0
        self.header_count = 0

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode()
        local = transport.get_extra_info("sockname")
        if local:
            self.local = b"%s:%d" % (str(local[0]).encode(), local[1])
        self.forwarded = http11.forwarding_fields(self.peer, http11.VIA) + b"\r\n"
        if len(self.proxy.clients) >= self.proxy.capacity.max_connections:
            body = contract.failure(contract.TOO_MANY_CONNECTIONS)
            self.write(http11.json_response(503, body, keep_alive=False, extra=http11.RETRY_AFTER))
            self.close()
            return
        self.proxy.clients.add(self)
        self._deadline(IDLE, self.limits.idle_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.current is None and not self.busy and self._take_plain(data):
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrades (WebSocket, h2c) are not supported: the request was answered as a
            # plain one (Upgrade is hop-by-hop, so the replica never saw it); whatever the
            # client sends next is another protocol, so close after that answer.
            self.closing = True
            last = self.queue[-1] if self.queue else None
            if isinstance(last, ProxiedRequest):
                last.keep_alive = False
            elif not self.busy:
                self.close()
        except httptools.HttpParserError as exc:
            self._refuse(400, f"Malformed request: {exc}")

    def _take_plain(self, data: bytes) -> bool:
        """Starts answering `data` if it is exactly one plain request within our limits;
        returns False (nothing done) otherwise, and the parser reads it as usual."""
        limits = self.limits
        if len(data) > limits.max_header_bytes or self.admin_only:
            return False
        plain = plain_request(data)
        if plain is None or data.count(b"\n") - 2 > limits.max_headers:
            return False
        method, target, path = plain.groups()
        path = path.decode("latin-1")
        if path in self.admin_paths:
            return False
        request = ProxiedRequest(method.decode("latin-1"), target, path, data)
        self.deadline = 0.0
        self.busy = True
        self.proxy.begin(request, self)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._release_slot()  # a cancelled answer never reaches `done`
        self.deadline = 0.0
        self.proxy.clients.discard(self)
        if self.current is not None and self.current.stream is not None:
            self.current.stream.abort()
        if self.worker is not None:
            self.worker.cancel()

    # -- deadlines (swept by the Proxy; no timer per request) ----------------------------

    def _deadline(self, kind: int, seconds: float) -> None:
        self.deadline_kind = kind
        self.deadline = self.proxy.now + seconds

    def expired(self) -> None:
        """Called by the Proxy's sweep once `deadline` has passed."""
        kind, self.deadline = self.deadline_kind, 0.0
        if kind == IDLE:
            self.close()
        elif kind == HEADERS:
            self._refuse(408, contract.slow_headers(self.limits.header_timeout))
        elif kind == BODY:
            if self.current is not None and self.current.stream is not None:
                self.current.stream.abort()
            self._refuse(408, contract.slow_body(self.limits.body_timeout))

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = ProxiedRequest()
        self.header_bytes = self.header_count = 0
        self._deadline(HEADERS, self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        request = self.current
        assert request is not None
        request.target += url
        self.header_bytes += len(url)
        if self.header_bytes > self.limits.max_header_bytes:
            self._refuse(414, contract.URI_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.current
        if request is None:
            return
        request.headers.append((name, value))
        self.header_count += 1
        self.header_bytes += len(name) + len(value)
        if (
            self.header_count > self.limits.max_headers
            or self.header_bytes > self.limits.max_header_bytes
        ):
            self._refuse(431, contract.HEADERS_TOO_LARGE)
            return
        action = _SPECIAL.get(name.lower())
        if action is None:
            request.head_lines += b"%s: %s\r\n" % (name, value)
        elif action == _HOST:
            request.has_host = True
            request.head_lines += b"%s: %s\r\n" % (name, value)
        elif action == _FORWARDED_FOR:
            request.forwarded_for += (b", " if request.forwarded_for else b"") + value
        elif action == _VIA:
            request.via += (b", " if request.via else b"") + value
        elif action == _LENGTH:
            request.length = int(value) if value.isdigit() else None
        elif action == _CHUNKED:
            request.chunked = True
        elif action == _CONNECTION:
            tokens = http11.named_by_connection(value)
            if tokens:
                request.connection_tokens = (request.connection_tokens or frozenset()) | tokens
        elif action == _EXPECT:
            request.expect_continue = value.strip().lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        request = self.current
        if request is None:
            return
        parser = self.parser
        request.method = parser.get_method().decode()
        request.version = parser.get_http_version()
        # An upgrade is answered as a plain request, then the connection ends (see
        # data_received): say so in the answer.
        request.keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        target = request.target
        cut = target.find(b"?")
        request.path = (target[:cut] if cut >= 0 else target).decode("latin-1")
        self.admin_request = request.path in self.admin_paths
        length = request.length
        limit = self._body_limit()
        if length is not None and length > limit:
            self._refuse(413, contract.body_too_large(limit))
            return
        if not (length or request.chunked):
            self.deadline = 0.0
            return
        self._deadline(BODY, self.limits.body_timeout)
        if request.expect_continue and not self.busy and not self.queue:
            # Safe only when no earlier answer is pending on this connection.
            self.write(CONTINUE)
        if not self.admin_request and (request.chunked or (length or 0) > STREAM_THRESHOLD):
            # Large or open-ended: forward it while it arrives instead of holding it.
            request.stream = BodyStream(
                None if request.chunked else length,
                lambda: self._pause_reading("body"),
                lambda: self._resume_reading("body"),
            )
            self._enqueue(request)

    def on_body(self, body: bytes) -> None:
        request = self.current
        if request is None:
            return
        self._deadline(BODY, self.limits.body_timeout)
        stream = request.stream
        if stream is not None:
            stream.received += len(body)
            if stream.received > self.proxy.max_body:
                # Only a chunked body can get here (a long Content-Length got 413 up front),
                # and part of it may be with a replica already: all we can do is hang up.
                log.warning("chunked body above max_body (%d): closing", self.proxy.max_body)
                stream.abort()
                self.close()
                return
            stream.feed(body)
            return
        request.body += body
        limit = self._body_limit()
        if len(request.body) > limit:
            self._refuse(413, contract.body_too_large(limit))

    def on_message_complete(self) -> None:
        request, self.current = self.current, None
        if request is None or self.refused:
            return
        self.deadline = 0.0
        if request.stream is not None:
            request.stream.finish()  # queued when its headers were complete
        else:
            self._enqueue(request)

    # -- the queue of answers --------------------------------------------------------------

    def _enqueue(self, item: ProxiedRequest | tuple[int, str]) -> None:
        self.queue.append(item)
        if len(self.queue) >= MAX_PIPELINE:
            self._pause_reading("pipeline")
        if not self.busy:
            self._next()

    def _next(self) -> None:
        """Starts answering the first queued item (call only when not busy)."""
        item = self.queue.popleft()
        if len(self.queue) < MAX_PIPELINE // 2:
            self._resume_reading("pipeline")
        if isinstance(item, tuple):
            status, text = item
            self.write(http11.json_response(status, contract.failure(text), keep_alive=False))
            self.close()
            return
        self.busy = True
        if item.path in self.admin_paths:
            self.worker = self.loop.create_task(self._answer_admin(item))
            return
        if self.admin_only:
            body = contract.failure(contract.not_on_admin_listener(item.path))
            self.write(http11.json_response(404, body, keep_alive=item.keep_alive))
            self.done(item.keep_alive)
            return
        self.proxy.begin(item, self)

    def done(self, keep_alive: bool) -> None:
        """Called when an answer is complete: starts the next one, or closes, or idles."""
        self.busy = False
        self.worker = None
        self._release_slot()
        transport = self.transport
        if not keep_alive or transport is None or transport.is_closing():
            self.close()
        elif self.queue:
            self._next()  # a pipelined request, or a queued refusal
        elif self.closing:
            self.close()
        elif self.current is None:
            self._deadline(IDLE, self.limits.idle_timeout)

    def _release_slot(self) -> None:
        """Gives back the Proxy.inflight slot a proxied answer held (see Proxy.begin)."""
        if self.proxying:
            self.proxying = False
            self.proxy.inflight -= 1

    async def _answer_admin(self, request: ProxiedRequest) -> None:
        async def answer() -> bool:
            admin = self.proxy.admin
            authorization = next(
                (v for n, v in request.headers if n.lower() == b"authorization"), None
            )
            result = await admin.handle(
                request.method, request.path, bytes(request.body), authorization
            )
            self.write(
                http11.serialize_response(
                    result.status,
                    [(b"Content-Type", result.content_type), *result.headers],
                    result.body,
                    keep_alive=request.keep_alive,
                    head=request.method == "HEAD",
                )
            )
            return request.keep_alive

        await self.run_answer(answer())

    async def run_answer(self, answer: Coroutine[Any, Any, bool]) -> None:
        """Awaits an answer in progress (it returns keep-alive), then calls `done`."""
        try:
            keep_alive = await answer
        except asyncio.CancelledError:
            return  # the client went away
        except Exception:
            log.exception("unexpected error while answering a client")
            keep_alive = False
        self.done(keep_alive)

    def upstream_request(self, request: ProxiedRequest) -> bytes:
        """Returns the request head (and small body) as sent to a replica: hop-by-hop
        fields out, X-Forwarded-For, X-Forwarded-Proto and Via in."""
        if request.raw_head is not None:
            return request.raw_head[:-2] + self.forwarded  # a plain request has none to drop
        head = bytes(request.head_lines)
        if request.connection_tokens:
            head = http11.drop_named_headers(head, request.connection_tokens)
        # HTTP/1.0 clients may omit Host; HTTP/1.1 replicas require it.
        host = b"" if request.has_host else b"Host: %s\r\n" % self.local
        forwarded_for = (
            request.forwarded_for + b", " + self.peer if request.forwarded_for else self.peer
        )
        via = request.via + b", " + http11.VIA if request.via else http11.VIA
        stream = request.stream
        if stream is not None:
            # The body follows separately, as it arrives (UpstreamConnection._pump).
            if stream.length is None:
                framing, body = b"Transfer-Encoding: chunked\r\n", b""
            else:
                framing, body = b"Content-Length: %d\r\n" % stream.length, b""
        elif request.body or request.method in ("POST", "PUT", "PATCH"):
            framing, body = b"Content-Length: %d\r\n" % len(request.body), bytes(request.body)
        else:
            framing, body = b"", b""
        return b"".join(
            (
                request.method.encode(),
                b" ",
                request.target,
                b" HTTP/1.1\r\n",
                head,
                host,
                http11.forwarding_fields(forwarded_for, via),
                framing,
                b"\r\n",
                body,
            )
        )

    # -- limits and refusals ---------------------------------------------------------------

    def _body_limit(self) -> int:
        return contract.MAX_ADMIN_BODY if self.admin_request else self.proxy.max_body

    def _refuse(self, status: int, text: str) -> None:
        """Queues an error answer after the answers already queued, then closes."""
        if self.refused or self.closing:
            return
        self.refused = True
        self.closing = True
        self.deadline = 0.0
        self.current = None
        self._enqueue((status, text))

    # -- I/O -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _pause_reading(self, reason: str) -> None:
        """Stops reading from the client for `reason`; reading resumes when no reason is left."""
        if not self.pause_reasons and self.transport is not None:
            self.transport.pause_reading()
        self.pause_reasons.add(reason)

    def _resume_reading(self, reason: str) -> None:
        if reason in self.pause_reasons:
            self.pause_reasons.discard(reason)
            if not self.pause_reasons and self.transport is not None and not self.closing:
                self.transport.resume_reading()

    # Back-pressure: a client that reads slowly slows the replica's answer down, instead
    # of the answer piling up in our memory.
    def pause_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.pause_reading()
            self.upstream_paused = upstream

    def resume_writing(self) -> None:
        upstream, self.upstream_paused = self.upstream_paused, None
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.resume_reading()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()
