"""HTTP/1.1 message building for the data plane: header filtering and serialization."""

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

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}

VIA = b"1.1 ringlb"


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Returns the header names listed in Connection (also hop-by-hop, RFC 9110 7.6.1)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return frozenset(tokens)


def forwardable(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Returns `headers` without hop-by-hop fields."""
    dropped = HOP_BY_HOP | connection_tokens(headers) if headers else HOP_BY_HOP
    return [(n, v) for n, v in headers if n.lower() not in dropped]


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """Returns the Content-Length value, or None when absent or not a number."""
    for name, value in headers:
        if len(name) == 14 and name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def has_header(headers: list[tuple[bytes, bytes]], lower_name: bytes) -> bool:
    return any(name.lower() == lower_name for name, _ in headers)


def expects_continue(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(n.lower() == b"expect" and v.strip().lower() == b"100-continue" for n, v in headers)


def status_line(status: int) -> bytes:
    return b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Unknown"))


def serialize_response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    keep_alive: bool,
    head: bool = False,
    head_length: int | None = None,
) -> bytes:
    """Returns a complete response; `headers` must already be free of hop-by-hop fields.

    A HEAD answer carries no body but the length the GET would have (`head_length`, when
    the replica said it).
    """
    parts = [status_line(status)]
    parts.extend(b"%s: %s\r\n" % (n, v) for n, v in headers)
    if status >= 200 and status not in (204, 304):
        length = head_length if head and head_length is not None else len(body)
        parts.append(b"Content-Length: %d\r\n" % length)
    if not keep_alive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if not head and status not in (204, 304):
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
