"""Request keys: the integer a hash policy routes on, derived from what the client sends.

CONTRACT.md: the `X-Request-ID` header when present (a 6-digit number is used as the
integer itself, any other string is reduced by a stable hash), otherwise a random 6-digit
id as the original specification does. Other key sources (a header, a cookie, the client
address, the path, a query parameter) are configuration; each reduces its text the same way.
"""

from __future__ import annotations

import hashlib
import random
from typing import Protocol
from urllib.parse import parse_qsl


def key_from_text(value: bytes) -> int:
    """Returns the integer key for a header value: itself if 6 digits, else a stable hash."""
    if len(value) == 6 and value.isdigit():
        return int(value)
    return int.from_bytes(hashlib.blake2b(value, digest_size=8).digest(), "big")


class RandomKeys:
    """Random 6-digit ids (100000..999999) for requests that carry no key."""

    __slots__ = ("_randint",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self._randint = (rng or random.Random()).randint

    def __call__(self) -> int:
        return self._randint(100000, 999999)


# -- key sources: what the key is computed on (the `key_source` setting) -----------------

Headers = list[tuple[bytes, bytes]]


class KeySource(Protocol):
    spec: str

    def key(self, headers: Headers, target: bytes, peer: bytes) -> int | None:
        """Returns the request's key, or None for "use a random 6-digit id"."""
        ...


class HeaderKey:
    """The value of one request header (default: `X-Request-ID`, the contract's rule)."""

    __slots__ = ("_length", "_name", "spec")

    def __init__(self, name: str, spec: str | None = None) -> None:
        self._name = name.lower().encode("latin-1")
        self._length = len(self._name)
        self.spec = spec or f"header:{name}"

    def key(self, headers: Headers, target: bytes, peer: bytes) -> int | None:
        wanted, length = self._name, self._length
        for name, value in headers:
            # The length test first: it rejects almost every header without lower().
            if len(name) == length and name.lower() == wanted:
                return key_from_text(value.strip())
        return None


class CookieKey:
    """The value of one cookie."""

    __slots__ = ("_name", "spec")

    def __init__(self, name: str) -> None:
        self._name = name.encode("latin-1")
        self.spec = f"cookie:{name}"

    def key(self, headers: Headers, target: bytes, peer: bytes) -> int | None:
        for name, value in headers:
            if len(name) == 6 and name.lower() == b"cookie":
                for pair in value.split(b";"):
                    cookie, _, content = pair.strip().partition(b"=")
                    if cookie == self._name:
                        return key_from_text(content)
        return None


class ClientAddressKey:
    """The client's IP address (the TCP peer, not X-Forwarded-For)."""

    spec = "client"

    def key(self, headers: Headers, target: bytes, peer: bytes) -> int | None:
        return key_from_text(peer)


class PathKey:
    """The request path, without the query string."""

    spec = "path"

    def key(self, headers: Headers, target: bytes, peer: bytes) -> int | None:
        return key_from_text(target.partition(b"?")[0])


class QueryKey:
    """The value of one query-string parameter (percent-decoded)."""

    __slots__ = ("_name", "spec")

    def __init__(self, name: str) -> None:
        self._name = name
        self.spec = f"query:{name}"

    def key(self, headers: Headers, target: bytes, peer: bytes) -> int | None:
        query = target.partition(b"?")[2]
        if not query:
            return None
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name == self._name:
                return key_from_text(value.encode())
        return None


class NoKey:
    """Every request gets a random 6-digit id, as the original specification does."""

    spec = "random"

    def key(self, headers: Headers, target: bytes, peer: bytes) -> int | None:
        return None


DEFAULT_KEY_SOURCE = "x-request-id"
KEY_SOURCES = (
    DEFAULT_KEY_SOURCE,
    "header:NAME",
    "cookie:NAME",
    "client",
    "path",
    "query:NAME",
    "random",
)


def make_key_source(spec: str) -> KeySource:
    """Returns the key source described by `spec` (one of KEY_SOURCES); raises ValueError."""
    kind, colon, argument = spec.partition(":")
    kind = kind.strip().lower()
    argument = argument.strip()
    if not colon:
        if kind == DEFAULT_KEY_SOURCE:
            return HeaderKey("X-Request-ID", DEFAULT_KEY_SOURCE)
        simple: dict[str, type[KeySource]] = {
            "client": ClientAddressKey,
            "path": PathKey,
            "random": NoKey,
        }
        if kind in simple:
            return simple[kind]()
    elif argument:
        if kind == "header":
            return HeaderKey(argument)
        if kind == "cookie":
            return CookieKey(argument)
        if kind == "query":
            return QueryKey(argument)
    raise ValueError(f"key_source: {spec!r} is not one of {', '.join(KEY_SOURCES)}")
