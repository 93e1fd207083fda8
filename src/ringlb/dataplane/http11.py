"""HTTP/1.1 pieces of the data plane: hop-by-hop rules and serialization of our own answers."""

from __future__ import annotations

from http import HTTPStatus

from ringlb.contract import JSON_CONTENT_TYPE

# RFC 9110 section 7.6.1: connection-specific fields a proxy must not forward. Framing
# headers are rebuilt by the proxy for each side, so they are dropped too.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
    }
)

# Request fields the proxy drops or rewrites besides those (connection._SPECIAL says how).
REWRITTEN_REQUEST_FIELDS = HOP_BY_HOP | {
    b"host",
    b"expect",
    b"via",
    b"x-forwarded-for",
    b"x-forwarded-proto",
}

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


# RFC 9112 6.3: final answers that never have a body (nor do 1xx, nor answers to HEAD).
NO_BODY_STATUSES = frozenset({204, 304})


def carries_body(status: int) -> bool:
    """Returns whether an answer with `status` has a body (a HEAD request's answer never
    does, which callers check)."""
    return status >= 200 and status not in NO_BODY_STATUSES


VIA = b"1.1 ringlb"


def forwarding_fields(forwarded_for: bytes, via: bytes, proto: bytes) -> bytes:
    """Returns the X-Forwarded-For, X-Forwarded-Proto and Via lines the proxy adds to a
    request, given the full values of the first and the last, and the client's scheme."""
    return b"X-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nVia: %s\r\n" % (
        forwarded_for,
        proto,
        via,
    )


# What a request asking to switch protocols becomes (`upgrade_kind`).
REFUSED_UPGRADE, TUNNEL_UPGRADE, IGNORED_UPGRADE = 0, 1, 2


def upgrade_kind(method: str, upgrade: bytes | None, local: bool) -> int:
    """Returns what a request the parser flagged as an upgrade becomes: a tunnel to the
    replica (WebSocket and other protocols, on a GET), an ignored upgrade (h2c: the data
    plane speaks HTTP/1.1 to replicas, so the request is answered in HTTP/1.1 as RFC 9110
    7.8 allows), or refused (CONNECT, the balancer's own paths: the connection closes
    after the answer)."""
    if local or method != "GET" or not upgrade:
        return REFUSED_UPGRADE
    protocols = {p.strip().split(b"/")[0].lower() for p in upgrade.split(b",")} - {b""}
    if protocols <= {b"h2c"}:
        return IGNORED_UPGRADE
    return TUNNEL_UPGRADE


def switching_protocols(header_lines: bytes, upgrade: bytes) -> bytes:
    """Returns the head of a 101 answer to the client: the replica's fields without its
    hop-by-hop ones (`header_lines`), and the upgrade to `upgrade`."""
    return b"%s%sConnection: Upgrade\r\nUpgrade: %s\r\n\r\n" % (
        status_line(101),
        header_lines,
        upgrade,
    )


# Sent with every 503 the balancer gives for want of capacity.
RETRY_AFTER = [(b"Retry-After", b"1")]

# Connection options that name no other header field.
_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close", b"upgrade"})


def named_by_connection(value: bytes) -> frozenset[bytes]:
    """Returns the header names a Connection value lists besides the usual options."""
    tokens = {t.strip().lower() for t in value.split(b",")}
    return frozenset(tokens - _CONNECTION_OPTIONS - {b""})


def drop_named_headers(head: bytes, names: set[bytes] | frozenset[bytes]) -> bytes:
    """Returns serialized header lines without the fields in `names` (lower-case)."""
    kept = [
        line
        for line in head.split(b"\r\n")
        if line and line.split(b":", 1)[0].strip().lower() not in names
    ]
    return b"".join(line + b"\r\n" for line in kept)


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


def serialize_response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    keep_alive: bool,
    head: bool = False,
) -> bytes:
    """Returns a complete response with `body` (left out for HEAD, 204 and 304)."""
    parts = [status_line(status)]
    parts.extend(b"%s: %s\r\n" % (n, v) for n, v in headers)
    has_body = carries_body(status)
    if has_body:
        parts.append(b"Content-Length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if has_body and not head:
        parts.append(body)
    return b"".join(parts)


def json_response(
    status: int,
    body: bytes,
    *,
    keep_alive: bool,
    head: bool = False,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """Returns a complete JSON response from the balancer itself."""
    headers = [(b"Content-Type", JSON_CONTENT_TYPE.encode())]
    if extra:
        headers.extend(extra)
    return serialize_response(status, headers, body, keep_alive=keep_alive, head=head)
