"""Request keys: the integer a hash policy routes on, derived from what the client sends.

CONTRACT.md: the `X-Request-ID` header when present (a 6-digit number is used as the
integer itself, any other string is reduced by a stable hash), otherwise a random 6-digit
id as the original specification does.
"""

from __future__ import annotations

import hashlib
import random


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
