"""One client request: what was received, and the head a replica will get instead.

`Request` is what the rest of the data plane reads (small and slotted: one per request).
`HeadParse` is the state of a request head while httptools parses it, field by field; it
rebuilds the head for the replica as it goes (hop-by-hop fields out, X-Forwarded-For and
Via extended), so forwarding costs one join, not a second pass.
"""

from __future__ import annotations

from ringlb.dataplane import http11
from ringlb.dataplane.body_stream import BodyStream
from ringlb.dataplane.plain import request_fields

# What HeadParse.add does with a field, by lower-case name; every other field is forwarded.
_DROP, _HOST, _FORWARDED_FOR, _VIA, _LENGTH, _CHUNKED, _CONNECTION, _EXPECT, _UPGRADE = range(9)
_SPECIAL = {name: _DROP for name in http11.REWRITTEN_REQUEST_FIELDS} | {
    b"host": _HOST,
    b"x-forwarded-for": _FORWARDED_FOR,
    b"via": _VIA,
    b"x-forwarded-proto": _DROP,  # replaced by ours
    b"content-length": _LENGTH,
    b"transfer-encoding": _CHUNKED,
    b"connection": _CONNECTION,
    b"expect": _EXPECT,  # answered by the balancer (100 Continue), not by the replica
    b"upgrade": _UPGRADE,  # sent on only for an upgrade the balancer tunnels
}

# Methods whose request has a body even when it is empty (Content-Length: 0 is sent).
_BODY_METHODS = ("POST", "PUT", "PATCH")


class Request:
    """A request as the data plane handles it. `head` is what goes to a replica: the
    request line and fields, plus the body when it is small enough to be held (a larger
    or chunked one is `stream`, forwarded while it arrives)."""

    __slots__ = (
        "body",
        "head",
        "head_only",
        "headers",
        "http11",
        "keep_alive",
        "key",
        "method",
        "path",
        "raw",
        "stream",
        "target",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        path: str,
        head: bytes,
        raw: bytes | None = None,
        http11: bool = True,
        keep_alive: bool = True,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.head = head
        self.raw = raw  # a plain request as received (its fields are read only if asked)
        self.http11 = http11
        self.keep_alive = keep_alive
        self.head_only = method == "HEAD"
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.body: bytes | bytearray = b""  # a held body (bytearray while it arrives)
        self.stream: BodyStream | None = None
        self.key: int | None = None  # the routing key, once computed

    def fields(self) -> list[tuple[bytes, bytes]]:
        """Returns the header fields as received."""
        headers = self.headers
        if headers is None:
            headers = self.headers = request_fields(self.raw) if self.raw is not None else []
        return headers


class UpgradeRequest(Request):
    """A request to switch protocols (WebSocket): after the replica's 101, its connection
    and the client's become a tunnel (`ringlb.dataplane.tunnel`). `upgrade` is the value
    of its Upgrade field."""

    __slots__ = ("upgrade",)

    upgrade: bytes


class HeadParse:
    """A request head being parsed: limits are counted and the replica's head is built."""

    __slots__ = (
        "chunked",
        "connection_tokens",
        "expect_continue",
        "forwarded_for",
        "has_host",
        "header_bytes",
        "header_count",
        "headers",
        "length",
        "lines",
        "target",
        "upgrade",
        "via",
    )

    def __init__(self) -> None:
        self.target = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.lines = bytearray()  # forwardable header lines, serialized
        self.header_bytes = 0
        self.header_count = 0
        self.length: int | None = None
        self.chunked = False
        self.has_host = False
        self.expect_continue = False
        self.forwarded_for = b""
        self.via = b""
        self.connection_tokens: frozenset[bytes] | None = None
        self.upgrade: bytes | None = None

    def add_target(self, url: bytes) -> None:
        self.target += url
        self.header_bytes += len(url)

    def add(self, name: bytes, value: bytes) -> None:
        """Takes one field: kept as received, and sorted for the replica's head."""
        self.headers.append((name, value))
        self.header_count += 1
        self.header_bytes += len(name) + len(value)
        action = _SPECIAL.get(name.lower())
        if action is None:
            self.lines += b"%s: %s\r\n" % (name, value)
        elif action == _HOST:
            self.has_host = True
            self.lines += b"%s: %s\r\n" % (name, value)
        elif action == _FORWARDED_FOR:
            self.forwarded_for += (b", " if self.forwarded_for else b"") + value
        elif action == _VIA:
            self.via += (b", " if self.via else b"") + value
        elif action == _LENGTH:
            self.length = int(value) if value.isdigit() else None
        elif action == _CHUNKED:
            self.chunked = True
        elif action == _CONNECTION:
            tokens = http11.named_by_connection(value)
            if tokens:
                self.connection_tokens = (self.connection_tokens or frozenset()) | tokens
        elif action == _EXPECT:
            self.expect_continue = value.strip().lower() == b"100-continue"
        elif action == _UPGRADE:
            self.upgrade = value.strip()

    def request(
        self,
        method: str,
        http11_client: bool,
        keep_alive: bool,
        streamed: bool,
        peer: bytes,
        local: bytes,
        proto: bytes,
        upgrade: bytes | None = None,
    ) -> Request:
        """Returns the parsed request, its head for the replica ready: framing for a body
        held (Content-Length) or `streamed` (the client's length, or chunked), and the
        upgrade to `upgrade` when it is to be tunnelled (an UpgradeRequest)."""
        target = self.target
        cut = target.find(b"?")
        path = (target[:cut] if cut >= 0 else target).decode("latin-1")
        lines = bytes(self.lines)
        if self.connection_tokens:
            lines = http11.drop_named_headers(lines, self.connection_tokens)
        # HTTP/1.0 clients may omit Host; HTTP/1.1 replicas require it.
        host = b"" if self.has_host else b"Host: %s\r\n" % local
        forwarded_for = self.forwarded_for + b", " + peer if self.forwarded_for else peer
        via = self.via + b", " + http11.VIA if self.via else http11.VIA
        length = self.length
        if streamed and (self.chunked or length is None):
            framing = b"Transfer-Encoding: chunked\r\n"
        elif length or method in _BODY_METHODS:
            framing = b"Content-Length: %d\r\n" % (length or 0)
        else:
            framing = b""
        if upgrade is not None:
            framing += b"Connection: Upgrade\r\nUpgrade: %s\r\n" % upgrade
        head = b"".join(
            (
                method.encode(),
                b" ",
                target,
                b" HTTP/1.1\r\n",
                lines,
                host,
                http11.forwarding_fields(forwarded_for, via, proto),
                framing,
                b"\r\n",
            )
        )
        if upgrade is None:
            request = Request(method, target, path, head, None, http11_client, keep_alive)
        else:
            request = UpgradeRequest(method, target, path, head, None, http11_client, keep_alive)
            request.upgrade = upgrade
        request.headers = self.headers
        return request
