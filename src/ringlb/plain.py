"""Plain HTTP/1.1 messages: the common shapes the data plane forwards without a parser.

Most traffic through a balancer is a small GET with a handful of ordinary headers, answered
by a small response with a Content-Length. Running the full parser on those costs a Python
callback per header field; these recognizers accept them with one regular-expression match
each, so the work happens in C. They accept a strict subset of RFC 9112: whatever they do
not accept goes to httptools and the general path, which gives the same result for the same
bytes (tests/unit/test_plain.py checks them against httptools). A recognizer may say "not
plain" for a valid message, never "plain" for one httptools would refuse or read otherwise.

A plain request is GET or HEAD, origin-form, HTTP/1.1, exactly one Host, no body and no
field the general path rewrites (hop-by-hop fields, framing, Expect, X-Forwarded-*, Via).
It is forwarded as received, with X-Forwarded-For, X-Forwarded-Proto and Via appended.

A plain response is HTTP/1.1, 2xx to 5xx (not 204 or 304), with exactly one Content-Length,
no other hop-by-hop field, and its whole body in hand. It is forwarded byte for byte.

Matching runs on a lower-cased copy (field names are case-insensitive, and `re`'s own
case-insensitive mode is several times slower); the case-sensitive parts (method, version)
are checked on the original bytes, and values are read from them.
"""

from __future__ import annotations

import re

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-z]+"  # lower-cased
_VALUE = rb"[\t\x20-\x7e\x80-\xff]*"  # field content: no control character but HTAB
# Origin-form request target: RFC 3986 path and query characters, percent-encoding.
_TARGET = rb"/[-a-z0-9._~%!$&'()*+,;=:@/?]*"
_PROXY_FIELD = rb"proxy-[-!#$%&'*+.^_`|~0-9a-z]*"


def _fields(excluded: bytes, required: bytes) -> bytes:
    """Returns a pattern for header lines, none named in `excluded`, around exactly one line
    matching `required` (CRLF included)."""
    other = rb"(?:(?!(?:" + excluded + rb"):)" + _TOKEN + rb":" + _VALUE + rb"\r\n)*"
    return other + required + other


# What the general request path drops or rewrites (connection._SPECIAL), and Host.
# Alternatives are grouped by first letter: `re` tries them in order, on every line.
_REQUEST_SPECIAL = (
    rb"c(?:onnection|ontent-length)|expect|host|keep-alive|"
    + _PROXY_FIELD
    + rb"|t(?:e|railer|ransfer-encoding)|upgrade|via|x-forwarded-(?:for|proto)"
)
_PLAIN_REQUEST = re.compile(
    rb"(get|head) ("
    + _TARGET
    + rb") http/1\.1\r\n"
    + _fields(_REQUEST_SPECIAL, rb"host:" + _VALUE + rb"\r\n")
    + rb"\r\n"
)

# http11.HOP_BY_HOP; Content-Length is matched by the required line instead.
_RESPONSE_SPECIAL = (
    rb"c(?:onnection|ontent-length)|keep-alive|"
    + _PROXY_FIELD
    + rb"|t(?:e|railer|ransfer-encoding)|upgrade"
)
_PLAIN_RESPONSE = re.compile(
    rb"http/1\.1 ([2-5][0-9][0-9])(?: "
    + _VALUE
    + rb")?\r\n"
    + _fields(_RESPONSE_SPECIAL, rb"content-length:[ \t]*([0-9]{1,15})[ \t]*\r\n")
    + rb"\r\n"
)

_FIELD = re.compile(rb"\r\n([^:\r\n]+):[ \t]*([^\r\n]*)")

_NO_BODY = (204, 304)
_METHODS = {"GET": b"GET ", "HEAD": b"HEAD "}


def plain_request(data: bytes) -> tuple[str, bytes] | None:
    """Returns (method, target) when `data` is exactly one plain request head, else None."""
    match = _PLAIN_REQUEST.fullmatch(data.lower())
    if match is None:
        return None
    method = "GET" if match.end(1) == 3 else "HEAD"
    end = match.end(2)
    if not data.startswith(_METHODS[method]) or data[end : end + 9] != b" HTTP/1.1":
        return None
    return method, data[match.start(2) : end]


def request_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """Returns the (name, value) fields of a plain request head as httptools gives them
    (leading whitespace of a value dropped, trailing whitespace kept)."""
    return _FIELD.findall(head)


def plain_response(data: bytes) -> int:
    """Returns the status when `data` is exactly one whole plain response, else 0."""
    match = _PLAIN_RESPONSE.match(data.lower())
    if match is None or match.end() + int(match[2]) != len(data) or data[:5] != b"HTTP/":
        return 0
    status = int(match[1])
    return 0 if status in _NO_BODY else status
