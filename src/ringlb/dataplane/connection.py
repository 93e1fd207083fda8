"""ClientConnection: one client's HTTP/1.1 connection, parsed with httptools.

It turns bytes into requests (enforcing header limits, deadlines and body limits), answers
them strictly in order (pipelining), and hands each proxied request to the `Forwarder`;
the balancer's own paths go to its `LocalEndpoints` instead. A read that holds exactly one
plain request (see `ringlb.dataplane.plain`: a small GET or HEAD with ordinary headers)
skips the parser: it is forwarded as received, with our fields appended.

Every state of a connection has a deadline, swept by `ringlb.dataplane.deadlines`: from
the accept until a request head is in (`header_timeout`, then 408), between two pieces of a
body (`body_timeout`, 408), while the client does not take the bytes of its answer
(`send_timeout`: cut off), and while idle between requests (`idle_timeout`: closed). Only
waiting for a replica has none here: that is the upstream timeout's.

A request to upgrade (WebSocket) is forwarded like any other, and nothing more is read
from the client until the replica answers: a `101` turns the connection into a tunnel
(`ringlb.dataplane.tunnel`, whose idle timeout is this connection's last deadline), any
other answer is relayed and the connection closes (what the client sends next is in the
protocol it asked for). An `h2c` upgrade is refused by ignoring it (RFC 9110 7.8): the
request is answered in HTTP/1.1 and the connection goes on as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import httptools

from ringlb import contract
from ringlb.dataplane import http11
from ringlb.dataplane.body_stream import BodyStream
from ringlb.dataplane.deadlines import DeadlineSweep
from ringlb.dataplane.forward import Forwarder, Forwarding, RequestHandler
from ringlb.dataplane.http11 import IGNORED_UPGRADE, TUNNEL_UPGRADE
from ringlb.dataplane.plain import plain_request
from ringlb.dataplane.request import HeadParse, Request
from ringlb.dataplane.routing import LocalEndpoints
from ringlb.dataplane.upstream import UpstreamConnection

log = logging.getLogger("ringlb.proxy")

MAX_PIPELINE = 32  # queued requests per connection before we stop reading from it
STREAM_THRESHOLD = 256 * 1024  # request bodies above this are forwarded while they arrive
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Unsent answer bytes above which the replica's answer stops being read: with the bounded
# reads from a replica (pool.READ_BUFFER), what one slow client makes us hold.
WRITE_HIGH_WATER = 16 * 1024

# Deadline kinds (see the module's docstring).
HEADERS, BODY, IDLE, SEND, TUNNEL = 1, 2, 3, 4, 5

# What a listener serves: local endpoints and proxying (the contract's single port), or
# only one of them (with `admin_port` set, the admin API gets a listener of its own).
BOTH, PROXY_ONLY, ADMIN_ONLY = "both", "proxy", "admin"


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What a client connection may take: deadlines (s), header and body sizes."""

    header_timeout: float  # from the accept (or the first byte of a request) to its head
    body_timeout: float  # longest pause between two pieces of a request body
    idle_timeout: float  # keep-alive connection with no request in progress
    send_timeout: float  # longest time the client may leave its answer's bytes untaken
    send_buffer: int  # SO_SNDBUF of a client socket (0: the kernel's autotuning)
    max_header_bytes: int
    max_headers: int
    max_body: int  # proxied request bodies (local endpoints take contract.MAX_ADMIN_BODY)
    tunnel_idle_timeout: float  # an upgraded connection with no byte either way


class Host(Protocol):
    """What a connection needs from the listener that accepted it."""

    forwarder: Forwarder
    endpoints: LocalEndpoints
    limits: ClientLimits
    sweep: DeadlineSweep

    def admit(self, conn: ClientConnection) -> bool:
        """Counts a new connection in; False when there are too many already."""
        ...

    def forget(self, conn: ClientConnection) -> None:
        """Counts a closed connection out."""
        ...


# The parser of a connection not open (yet, or any more): it is never fed (data_received
# ignores a closing connection), and it holds no connection.
SPENT_PARSER = httptools.HttpRequestParser(object())


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests, answers them in order."""

    __slots__ = (
        "admin_only",
        "busy",
        "closing",
        "current",
        "deadline",
        "deadline_kind",
        "draining",
        "early",
        "forwarded",
        "forwarder",
        "forwarding",
        "limits",
        "listener",
        "local",
        "local_paths",
        "local_request",
        "parse",
        "parser",
        "pause_reasons",
        "paused_for",
        "paused_upstream",
        "peer",
        "proto",
        "queue",
        "refused",
        "sweep",
        "transport",
        "upgrade",
        "worker",
        "write_paused",
    )

    def __init__(
        self, listener: Host, role: str, proto: bytes, forwarder: RequestHandler | None = None
    ) -> None:
        self.listener = listener
        self.forwarder: RequestHandler = forwarder or listener.forwarder
        self.sweep = listener.sweep
        self.limits = listener.limits
        self.local_paths = frozenset() if role == PROXY_ONLY else listener.endpoints.paths
        self.admin_only = role == ADMIN_ONLY
        self.proto = proto  # the scheme the client used, for X-Forwarded-Proto
        self.transport: asyncio.Transport | None = None
        self.parser = SPENT_PARSER  # its own from connection_made to connection_lost
        self.peer = b"unknown"
        self.local = b"localhost"
        self.forwarded = b""  # the fields we add to a plain request head, with its last CRLF
        self.parse: HeadParse | None = None  # a request head being parsed
        self.current: Request | None = None  # a request whose body is being read
        self.local_request = False  # ... and it is for a local endpoint
        self.refused = False
        self.queue: deque[Request | tuple[int, str]] = deque()
        self.busy = False  # an answer is being produced
        self.forwarding: Forwarding | None = None  # ... for a proxied request
        self.worker: asyncio.Task[None] | None = None  # ... by a local endpoint
        self.closing = False
        self.draining = False  # the balancer stops: close after the answers in progress
        self.pause_reasons: set[str] = set()
        self.deadline = 0.0  # 0: none; else the sweep's `now` after which `deadline_kind` fires
        self.deadline_kind = 0
        self.write_paused = False
        self.paused_upstream: UpstreamConnection | None = None
        self.paused_for: Forwarding | None = None
        # The last request head asked to upgrade: 1 into a tunnel, 2 into h2c (ignored).
        self.upgrade = 0
        self.early = b""  # bytes the client sent after its upgrade request (for the tunnel)

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.parser = httptools.HttpRequestParser(self)
        transport.set_write_buffer_limits(WRITE_HIGH_WATER)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode()
        local = transport.get_extra_info("sockname")
        if local:
            self.local = b"%s:%d" % (str(local[0]).encode(), local[1])
        self.forwarded = http11.forwarding_fields(self.peer, http11.VIA, self.proto) + b"\r\n"
        if not self.listener.admit(self):
            body = contract.failure(contract.TOO_MANY_CONNECTIONS)
            self.write(http11.json_response(503, body, keep_alive=False, extra=http11.RETRY_AFTER))
            self.close()
            return
        self._deadline(HEADERS, self.limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.parse is None and self.current is None and not self.busy:
            # A read that is exactly one plain request, within our limits, for a replica.
            limits = self.limits
            plain = plain_request(data) if len(data) <= limits.max_header_bytes else None
            if plain is not None and data.count(b"\n") - 2 <= limits.max_headers:
                method, target, path = plain.groups()
                path = path.decode("latin-1")
                if path not in self.local_paths and not self.admin_only:
                    self.deadline = 0.0
                    self.busy = True
                    head = data[:-2] + self.forwarded
                    request = Request(method.decode("latin-1"), target, path, head, data)
                    self.forwarder.begin(request, self)
                    return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._after_upgrade_request(data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            self._refuse(400, f"Malformed request: {exc}")

    def _after_upgrade_request(self, rest: bytes) -> None:
        """The parser stopped after a request to switch protocols; `rest` is what came
        after it."""
        kind, self.upgrade = self.upgrade, 0
        if kind == TUNNEL_UPGRADE:
            # Held until the replica says yes (then they go first through the tunnel) or
            # no (then the connection closes after its answer).
            self.early += rest
            self._pause_reading("upgrade")
        elif kind == IGNORED_UPGRADE:
            self.parser = httptools.HttpRequestParser(self)  # it stopped: a fresh one
            if rest:
                self.data_received(rest)
        else:
            # CONNECT, or an Upgrade we do not forward: answered as a plain request;
            # whatever the client sends next is another protocol, so close after that.
            self.closing = True
            last = self.queue[-1] if self.queue else None
            if isinstance(last, Request):
                last.keep_alive = False
            elif not self.busy:
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        # The parser holds this connection (its callbacks), and this connection holds the
        # transport (with TLS, uvloop's 256 KiB buffer and the OpenSSL state): breaking that
        # cycle frees them all at once by reference counting instead of at the cyclic
        # collector's next pass, which let closed TLS connections pile up to 200 MiB under
        # a stream of handshakes.
        self.parser = SPENT_PARSER
        self.closing = True
        self.deadline = 0.0
        self.listener.forget(self)
        forwarding, self.forwarding = self.forwarding, None
        if forwarding is not None:
            forwarding.cancel()  # nobody will read its answer
        for request in (self.current, *self.queue):
            if isinstance(request, Request) and request.stream is not None:
                request.stream.abort()
        if self.worker is not None:
            self.worker.cancel()

    # -- deadlines (swept; no timer per request) -----------------------------------------

    def _deadline(self, kind: int, seconds: float) -> None:
        if self.write_paused:
            return  # the client owes us its reading first: that deadline stands
        self.deadline_kind = kind
        self.deadline = self.sweep.now + seconds

    def _restore_deadline(self) -> None:
        """Sets the deadline of the state the connection is in."""
        limits = self.limits
        if self.current is not None:
            self._deadline(BODY, limits.body_timeout)
        elif self.parse is not None:
            self._deadline(HEADERS, limits.header_timeout)
        elif self.busy:
            self.deadline = 0.0
        else:
            self._deadline(IDLE, limits.idle_timeout)

    def expired(self) -> None:
        """Called by the sweep once `deadline` has passed."""
        kind, self.deadline = self.deadline_kind, 0.0
        limits = self.limits
        if kind == IDLE:
            self.close()
        elif kind == HEADERS:
            self._refuse(408, contract.slow_headers(limits.header_timeout))
        elif kind == BODY:
            self._refuse(408, contract.slow_body(limits.body_timeout))
        elif kind == SEND:
            log.warning(
                "client %s reads too slowly (its answer did not drain in %g s): connection cut",
                self.peer.decode("latin-1"),
                limits.send_timeout,
            )
            self.abort()
        elif kind == TUNNEL:
            self.abort()  # its tunnel ends with the transport

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.parse = HeadParse()
        if self.deadline_kind != HEADERS:  # a new connection's deadline runs from the accept
            self._deadline(HEADERS, self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        parse = self.parse
        if parse is None:
            return
        parse.add_target(url)
        if parse.header_bytes > self.limits.max_header_bytes:
            self._refuse(414, contract.URI_TOO_LONG)

    def on_header(self, name: bytes, value: bytes) -> None:
        parse = self.parse
        if parse is None:
            return
        parse.add(name, value)
        limits = self.limits
        if parse.header_count > limits.max_headers or parse.header_bytes > limits.max_header_bytes:
            self._refuse(431, contract.HEADERS_TOO_LARGE)

    def on_headers_complete(self) -> None:
        parse, self.parse = self.parse, None
        if parse is None:
            return
        parser = self.parser
        method = parser.get_method().decode()
        length = parse.length
        target = parse.target
        cut = target.find(b"?")
        path = (target[:cut] if cut >= 0 else target).decode("latin-1")
        local = self.local_request = path in self.local_paths
        limit = contract.MAX_ADMIN_BODY if local else self.limits.max_body
        if length is not None and length > limit:
            self._refuse(413, contract.body_too_large(limit))
            return
        has_body = bool(length or parse.chunked)
        streamed = has_body and not local and (parse.chunked or (length or 0) > STREAM_THRESHOLD)
        keep_alive = parser.should_keep_alive()
        upgrade = None
        if parser.should_upgrade():
            # Refused upgrades and CONNECT end the connection after their answer (see
            # _after_upgrade_request): say so in the answer.
            self.upgrade = http11.upgrade_kind(method, parse.upgrade, local)
            if self.upgrade == TUNNEL_UPGRADE:
                upgrade = parse.upgrade
            keep_alive = keep_alive and self.upgrade == IGNORED_UPGRADE
        request = parse.request(
            method,
            parser.get_http_version() == "1.1",
            keep_alive,
            streamed,
            self.peer,
            self.local,
            self.proto,
            upgrade,
        )
        if not has_body:
            self.current = None
            self.deadline = 0.0
            self._enqueue(request)
            return
        self.current = request
        request.body = bytearray()
        self._deadline(BODY, self.limits.body_timeout)
        if parse.expect_continue and not self.busy and not self.queue:
            # Safe only when no earlier answer is pending on this connection.
            self.write(CONTINUE)
        if streamed:
            # Large or open-ended: forward it while it arrives instead of holding it.
            request.stream = BodyStream(
                None if parse.chunked else length,
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
            max_body = self.limits.max_body
            if stream.received > max_body:
                # Only a chunked body can get here (a long Content-Length got 413 up front),
                # and part of it may be with a replica already: all we can do is hang up.
                log.warning("chunked body above max_body (%d): closing", max_body)
                self.abort()
                return
            stream.feed(body)
            return
        request.body += body
        limit = contract.MAX_ADMIN_BODY if self.local_request else self.limits.max_body
        if len(request.body) > limit:
            self._refuse(413, contract.body_too_large(limit))

    def on_message_complete(self) -> None:
        request, self.current = self.current, None
        if request is None or self.refused:
            return
        self.deadline = 0.0
        if request.stream is not None:
            request.stream.finish()  # queued when its headers were complete
            return
        request.body = bytes(request.body)
        if not self.local_request:
            request.head += request.body
        self._enqueue(request)

    # -- the queue of answers --------------------------------------------------------------

    def _enqueue(self, item: Request | tuple[int, str]) -> None:
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
        if item.path in self.local_paths:
            self.worker = asyncio.get_running_loop().create_task(self._answer_locally(item))
            return
        if self.admin_only:
            body = contract.failure(contract.not_on_admin_listener(item.path))
            self.write(http11.json_response(404, body, keep_alive=item.keep_alive))
            self.answered(item.keep_alive)
            return
        self.forwarder.begin(item, self)

    def answered(self, keep_alive: bool) -> None:
        """An answer is complete: starts the next one, or closes, or idles."""
        self.busy = False
        self.forwarding = None
        transport = self.transport
        if not keep_alive or transport is None or transport.is_closing():
            self.close()
        elif self.queue:
            self._next()  # a pipelined request, or a queued refusal
        elif self.closing or self.draining:
            self.close()
        elif self.parse is None and self.current is None and not self.write_paused:
            self.deadline_kind = IDLE
            self.deadline = self.sweep.now + self.limits.idle_timeout

    async def _answer_locally(self, request: Request) -> None:
        try:
            authorization = next(
                (v for n, v in request.fields() if n.lower() == b"authorization"), None
            )
            answer = await self.listener.endpoints.handle(
                request.method, request.path, bytes(request.body), authorization
            )
            self.write(
                http11.serialize_response(
                    answer.status,
                    [(b"Content-Type", answer.content_type), *answer.headers],
                    answer.body,
                    keep_alive=request.keep_alive,
                    head=request.head_only,
                )
            )
            keep_alive = request.keep_alive
        except asyncio.CancelledError:
            return  # the client went away
        except Exception:
            log.exception("unexpected error while answering a client")
            keep_alive = False
        self.worker = None
        self.answered(keep_alive)

    # -- refusals --------------------------------------------------------------------------

    def _refuse(self, status: int, text: str) -> None:
        """Queues an error answer after the answers already queued, then closes. A request
        whose body was being forwarded is stopped first: its replica gets no more of it."""
        if self.refused or self.closing:
            return
        self.refused = True
        self.closing = True
        self.deadline = 0.0
        self.parse = None
        request, self.current = self.current, None
        if request is not None and request.stream is not None:
            request.stream.abort()
            forwarding = self.forwarding
            if forwarding is not None and forwarding.request is request:
                self.forwarding = None
                started = forwarding.answer_started()
                forwarding.cancel()
                if started:  # part of its answer went out: no room for ours
                    self.abort()
                    return
                self.busy = False
            elif request in self.queue:
                self.queue.remove(request)
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
    # of the answer piling up in our memory; meanwhile its deadline is the send timeout.
    def pause_writing(self) -> None:
        self.write_paused = True
        self.deadline_kind = SEND
        self.deadline = self.sweep.now + self.limits.send_timeout
        forwarding = self.forwarding
        conn = forwarding.conn if forwarding is not None else None
        if conn is not None:
            conn.client_paused()
            self.paused_upstream, self.paused_for = conn, forwarding

    def resume_writing(self) -> None:
        self.write_paused = False
        conn, self.paused_upstream = self.paused_upstream, None
        forwarding, self.paused_for = self.paused_for, None
        if conn is not None and conn.exchange is forwarding:
            conn.client_resumed()
        if not self.closing:
            self._restore_deadline()

    def drain(self) -> None:
        """The balancer stops: no new requests; close once the answers under way are out
        (a tunnel has no end in sight: it closes now)."""
        if self.deadline_kind == TUNNEL:
            self.close()
            return
        self.draining = True
        self._pause_reading("draining")
        for item in self.queue:
            if isinstance(item, Request):
                item.keep_alive = False
        if not self.busy and not self.queue:
            self.close()

    # -- after a 101: the tunnel (ringlb.dataplane.tunnel) ------------------------------

    def switch(self, answer: bytes) -> tuple[asyncio.Transport, bytes] | None:
        """The replica accepted the upgrade: writes its `answer` (the 101) and returns the
        transport and the bytes the client sent after its request, for the tunnel that
        takes the connection over; None when the client is gone."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.closing:
            return None
        self.forwarding = None
        transport.write(answer)
        early, self.early = self.early, b""
        self.pause_reasons.clear()  # the tunnel reads from now on
        self.deadline_kind = TUNNEL
        self.tunnel_active()
        return transport, early

    def tunnel_active(self) -> None:
        self.deadline = self.sweep.now + self.limits.tunnel_idle_timeout

    def close(self) -> None:
        """Closes after what was written is sent."""
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Closes at once, dropping what is unsent (an answer cut short, a client that does
        not read): nothing is kept for a peer that will not take it."""
        self.closing = True
        self.busy = False
        forwarding, self.forwarding = self.forwarding, None
        if forwarding is not None:
            forwarding.cancel()
        if self.transport is not None:
            self.transport.abort()
