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

Field names are case-insensitive, the method and the version are not: the patterns match
the names with `(?i:...)` groups only (`re`'s case-insensitive mode is slow on long runs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ringlb.dataplane.http11 import HOP_BY_HOP, NO_BODY_STATUSES, REWRITTEN_REQUEST_FIELDS

# Possessive quantifiers (*+, ++): nothing here needs backtracking, and not recording
# where to backtrack to makes matching about a quarter faster.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]++"
_VALUE = rb"[^\x00-\x08\n-\x1f\x7f]*+"  # field content: no control character but HTAB
# Origin-form request target: RFC 3986 path and query characters, percent-encoding.
_PATH = rb"/[-A-Za-z0-9._~%!$&'()*+,;=:@/]*+"
_QUERY = rb"\?[-A-Za-z0-9._~%!$&'()*+,;=:@/?]*+"


def _names(names: Iterable[bytes]) -> bytes:
    """Returns an alternation matching the lower-case field `names`, and every Proxy-*
    field. Alternatives are grouped by first letter (`c(?:onnection|ontent-length)`): `re`
    tries them in order, on every header line."""
    by_letter: dict[bytes, list[bytes]] = {}
    for name in sorted(n for n in names if not n.startswith(b"proxy-")):
        by_letter.setdefault(name[:1], []).append(re.escape(name[1:]))
    groups = [first + b"(?:" + b"|".join(rests) + b")" for first, rests in by_letter.items()]
    return b"|".join([*groups, rb"proxy-[-!#$%&'*+.^_`|~0-9a-z]*"])


def _fields(excluded: bytes, required: bytes) -> bytes:
    """Returns a pattern for header lines, none named in `excluded` (lower case), around
    exactly one line matching `required` (CRLF included)."""
    other = rb"(?:(?!(?i:" + excluded + rb"):)" + _TOKEN + rb":" + _VALUE + rb"\r\n)*+"
    return other + required + other


# What the general request path drops or rewrites (Host among them).
_REQUEST_SPECIAL = _names(REWRITTEN_REQUEST_FIELDS)
_PLAIN_REQUEST = re.compile(
    rb"(GET|HEAD) (("
    + _PATH
    + rb")(?:"
    + _QUERY
    + rb")?) HTTP/1\.1\r\n"
    + _fields(_REQUEST_SPECIAL, rb"(?i:host):" + _VALUE + rb"\r\n")
    + rb"\r\n"
)

# Hop-by-hop fields; Content-Length among them, matched by the required line instead.
_RESPONSE_SPECIAL = _names(HOP_BY_HOP)
_PLAIN_RESPONSE = re.compile(
    rb"HTTP/1\.1 ([2-5][0-9][0-9])(?: "
    + _VALUE
    + rb")?\r\n"
    + _fields(_RESPONSE_SPECIAL, rb"(?i:content-length):[ \t]*+([0-9]{1,15})[ \t]*+\r\n")
    + rb"\r\n"
)

_FIELD = re.compile(rb"\r\n([^:\r\n]+):[ \t]*([^\r\n]*)")

# Returns a match when its argument is exactly one plain request head, else None; the
# groups are the method, the target and the target's path. (The pattern's own method: no
# Python frame in between, on every request.)
plain_request = _PLAIN_REQUEST.fullmatch


def request_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """Returns the (name, value) fields of a plain request head as httptools gives them
    (leading whitespace of a value dropped, trailing whitespace kept)."""
    return _FIELD.findall(head)


def plain_response(data: bytes) -> int:
    """Returns the status when `data` is exactly one whole plain response, else 0."""
    match = _PLAIN_RESPONSE.match(data)
    if match is None or match.end() + int(match[2]) != len(data):
        return 0
    status = int(match[1])  # 2xx to 5xx: the pattern takes no 1xx
    return 0 if status in NO_BODY_STATUSES else status
