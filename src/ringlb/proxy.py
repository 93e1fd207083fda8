"""The data plane: client connections at the protocol level, routed to replicas.

Per request it reads the routing snapshot once, picks a replica, and forwards over a
pooled keep-alive connection. It never blocks, sleeps, locks or calls a runtime; its only
write to the control plane is `ReplicaSet.eject` for a replica that failed hard.
Requests on one connection are answered in order (HTTP/1.1 pipelining).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import httptools

from ringlb import contract, http11
from ringlb.admin import AdminAPI
from ringlb.keys import RandomKeys, key_from_text
from ringlb.replica import Replica
from ringlb.replicaset import ReplicaSet
from ringlb.upstream import UpstreamFailure, UpstreamPool

log = logging.getLogger("ringlb.proxy")

MAX_PIPELINE = 32  # queued requests per connection before we stop reading from it
REQUEST_ID = b"x-request-id"
_NO_BODY_STATUSES = (204, 304)


class ProxiedRequest:
    __slots__ = ("body", "headers", "keep_alive", "key", "method", "path", "target", "version")

    def __init__(self) -> None:
        self.method = ""
        self.target = b""
        self.path = ""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.keep_alive = True
        self.key: int | None = None


class Proxy:
    """Everything a client connection needs: the snapshot source, pools and settings."""

    def __init__(
        self,
        replicaset: ReplicaSet,
        admin: AdminAPI,
        *,
        pool_size: int,
        connect_timeout: float,
        timeout: float,
        max_attempts: int,
        max_body: int,
        random_key: Callable[[], int] | None = None,
    ) -> None:
        self.replicaset = replicaset
        self.admin = admin
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_body = max_body
        self.random_key = random_key or RandomKeys()
        self.pools: dict[Replica, UpstreamPool] = {}

    def protocol(self) -> ClientConnection:
        return ClientConnection(self)

    def forget(self, replica: Replica) -> None:
        """Closes the pool of a replica that left the set for good."""
        pool = self.pools.pop(replica, None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()

    def _pool(self, replica: Replica) -> UpstreamPool:
        pool = self.pools.get(replica)
        if pool is None:
            pool = UpstreamPool(replica, self.pool_size, self.connect_timeout)
            self.pools[replica] = pool
        return pool

    async def forward(self, request: ProxiedRequest, upstream_bytes: bytes) -> bytes:
        """Returns the client's response bytes: the replica's answer, or a JSON error."""
        key = request.key if request.key is not None else self.random_key()
        head = request.method == "HEAD"
        tried: list[Replica] = []
        error = ""
        for _ in range(self.max_attempts):
            replica = self.replicaset.snapshot.picker.pick(key, tried)
            if replica is None:
                break
            tried.append(replica)
            replica.inflight += 1
            try:
                response = await self._exchange(replica, upstream_bytes, head)
            except UpstreamFailure as exc:
                error = f"replica '{replica.name}': {exc}"
                log.warning("request to %s failed: %s; retrying elsewhere", replica.name, exc)
                self.replicaset.eject(replica)
                continue
            finally:
                replica.inflight -= 1
            status = response.status
            if status == 404:
                body = contract.unknown_endpoint(request.path)
                return http11.json_response(400, body, keep_alive=request.keep_alive, head=head)
            return http11.serialize_response(
                status,
                http11.forwardable(response.headers),
                b"".join(response.body),
                keep_alive=request.keep_alive,
                head=head,
            )
        if not tried:
            body = contract.failure(contract.NO_REPLICAS)
            return http11.json_response(503, body, keep_alive=request.keep_alive, head=head)
        body = contract.failure(contract.upstream_failed(error))
        return http11.json_response(502, body, keep_alive=request.keep_alive, head=head)

    async def _exchange(self, replica: Replica, request: bytes, head: bool):
        pool = self._pool(replica)
        conn = await pool.acquire()
        try:
            response = await conn.exchange(request, head, self.timeout)
        except UpstreamFailure as exc:
            if not exc.stale:
                raise
            # A reused connection the replica had closed: retry once on a new one.
            conn = await pool.acquire(fresh=True)
            response = await conn.exchange(request, head, self.timeout)
        pool.release(conn, response.keep_alive)
        return response


class ClientConnection(asyncio.Protocol):
    """One client connection: parses requests with httptools, answers them in order."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b"unknown"
        self.current: ProxiedRequest | None = None
        self.admin_request = False
        self.refused: tuple[int, str] | None = None
        self.queue: deque[ProxiedRequest | tuple[int, str]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.closing = False
        self.paused = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "Protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._refuse(400, f"Malformed request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.worker is not None:
            self.worker.cancel()

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = ProxiedRequest()
        self.refused = None

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.current.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.current
        assert request is not None
        request.headers.append((name, value))
        if len(name) == 12 and name.lower() == REQUEST_ID:
            request.key = key_from_text(value.strip())

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        parser = self.parser
        request.method = parser.get_method().decode()
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        target = request.target
        cut = target.find(b"?")
        request.path = (target[:cut] if cut >= 0 else target).decode("latin-1")
        self.admin_request = request.path in self.proxy.admin.paths
        length = _content_length(request.headers)
        if length is not None and length > self._body_limit():
            self._refuse(413, self._too_large())

    def on_body(self, body: bytes) -> None:
        request = self.current
        if request is None or self.refused is not None:
            return
        request.body += body
        if len(request.body) > self._body_limit():
            self._refuse(413, self._too_large())

    def on_message_complete(self) -> None:
        request, self.current = self.current, None
        if request is None or self.refused is not None:
            return
        self.queue.append(request)
        if len(self.queue) >= MAX_PIPELINE and not self.paused and self.transport:
            self.paused = True
            self.transport.pause_reading()
        if self.worker is None:
            self.worker = asyncio.ensure_future(self._serve_queue())

    # -- answering -------------------------------------------------------------------------

    def _body_limit(self) -> int:
        return contract.MAX_ADMIN_BODY if self.admin_request else self.proxy.max_body

    def _too_large(self) -> str:
        if self.admin_request:
            return contract.BODY_TOO_LARGE
        return f"Request body larger than {self.proxy.max_body} bytes"

    def _refuse(self, status: int, text: str) -> None:
        """Queues an error answer after the requests already queued, then closes."""
        self.refused = (status, text)
        self.closing = True
        self.current = None
        self.queue.append((status, text))
        if self.worker is None:
            self.worker = asyncio.ensure_future(self._serve_queue())

    async def _serve_queue(self) -> None:
        try:
            while self.queue:
                item = self.queue.popleft()
                if isinstance(item, tuple):
                    status, text = item
                    self._write(
                        http11.json_response(status, contract.failure(text), keep_alive=False)
                    )
                    self._close()
                    return
                response = await self._answer(item)
                self._write(response)
                if not item.keep_alive:
                    self._close()
                    return
                if self.paused and len(self.queue) < MAX_PIPELINE // 2 and self.transport:
                    self.paused = False
                    self.transport.resume_reading()
        except asyncio.CancelledError:
            return
        except Exception:
            log.exception("unexpected error while answering a client")
            self._close()
        finally:
            self.worker = None

    async def _answer(self, request: ProxiedRequest) -> bytes:
        if request.path in self.proxy.admin.paths:
            result = await self.proxy.admin.handle(
                request.method, request.path, bytes(request.body)
            )
            return http11.json_response(
                result.status,
                result.body,
                keep_alive=request.keep_alive,
                head=request.method == "HEAD",
                extra=result.headers,
            )
        return await self.proxy.forward(request, self._upstream_bytes(request))

    def _upstream_bytes(self, request: ProxiedRequest) -> bytes:
        """Returns the request as sent to a replica: hop-by-hop fields out, proxy fields in."""
        parts = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.target)]
        forwarded_for = self.peer
        for name, value in http11.forwardable(request.headers):
            lower = name.lower()
            if lower == b"x-forwarded-for":
                forwarded_for = value + b", " + self.peer
                continue
            if lower in (b"x-forwarded-proto", b"via"):
                continue
            parts.append(b"%s: %s\r\n" % (name, value))
        parts.append(b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: http\r\n" % forwarded_for)
        parts.append(b"Via: " + http11.VIA + b"\r\n")
        body = request.body
        if body or request.method in ("POST", "PUT", "PATCH"):
            parts.append(b"Content-Length: %d\r\n" % len(body))
        parts.append(b"\r\n")
        parts.append(bytes(body))
        return b"".join(parts)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
