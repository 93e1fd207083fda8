"""Hash functions for the hash policies, selectable by name.

A `Hasher` gives two points: `key(k)` for a request key and `node(replica, j)` for a
replica's j-th virtual node (ring), or its j-th independent hash (Maglev's offset and skip,
rendezvous' seed). Byte hashes (xxhash64, murmur3, blake2b, a user's `module:function`) hash
the key's 8 little-endian bytes and the text `"<name>#<j>"`, so a replica re-added under
the same name gets the same points back. Polynomial hashes (the specification's H and PHI,
or a user's coefficients) work on integers: the key itself and the replica's integer id.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mmh3
import xxhash

from ringlb.model import Replica

MASK64 = (1 << 64) - 1
SPACE64 = 1 << 64

SPEC_H = (1, 2, 17)  # H(i) = i^2 + 2i + 17
SPEC_PHI = (1, 1, 2, 25)  # PHI(i, j) = i^2 + j^2 + 2j + 25

BytesHash = Callable[[bytes], int]


def _blake2b64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _murmur3_64(data: bytes) -> int:
    return mmh3.hash64(data, signed=False)[0]


BYTE_HASHES: dict[str, BytesHash] = {
    "xxhash64": xxhash.xxh64_intdigest,
    "murmur3": _murmur3_64,
    "blake2b": _blake2b64,
}
POLYNOMIAL_HASHES = ("spec", "poly")
HASH_NAMES = (*BYTE_HASHES, *POLYNOMIAL_HASHES, "module:function")


class BytesHasher:
    """A 64-bit byte hash; points are uniform on [0, 2^64)."""

    uniform = True

    def __init__(self, name: str, digest: BytesHash) -> None:
        self.name = name
        self._digest = digest

    def key(self, key: int) -> int:
        """Returns the point of a request key, in [0, 2^64)."""
        return self._digest((key & MASK64).to_bytes(8, "little")) & MASK64

    def node(self, replica: Replica, j: int) -> int:
        """Returns the point of `replica`'s j-th virtual node, in [0, 2^64)."""
        return self._digest(f"{replica.name}#{j}".encode()) & MASK64

    def options(self) -> dict[str, object]:
        """Returns the policy options that select this hash (for GET /policy)."""
        return {"hash": self.name}

    def identity(self, replica: Replica) -> tuple[object, ...]:
        """Returns what this hash knows a replica by (its name), to order replicas by."""
        return (replica.name,)


@dataclass(frozen=True, slots=True)
class PolynomialHasher:
    """H(i) = sum(h[k] * i^(d-k)) on the key, PHI(i, j) = a i^2 + b j^2 + c j + d on the
    replica id; points are small non-negative integers, reduced modulo the slot count."""

    h: tuple[int, ...] = SPEC_H
    phi: tuple[int, int, int, int] = SPEC_PHI
    name: str = "spec"
    uniform = False

    def key(self, key: int) -> int:
        value = 0
        for coefficient in self.h:
            value = value * key + coefficient
        return abs(value)

    def identity(self, replica: Replica) -> tuple[object, ...]:
        """Returns what this hash knows a replica by (its ring id), to order replicas by."""
        return (replica.rid, replica.name)

    def node(self, replica: Replica, j: int) -> int:
        a, b, c, d = self.phi
        i = replica.rid
        return abs(a * i * i + b * j * j + c * j + d)

    def options(self) -> dict[str, object]:
        """Returns the policy options that select this hash (for GET /policy)."""
        if self.name == "poly":
            return {
                "hash": "poly",
                "h_coefficients": list(self.h),
                "phi_coefficients": list(self.phi),
            }
        return {"hash": self.name}


Hasher = BytesHasher | PolynomialHasher


def canonical_order(replicas: Sequence[Replica], hasher: Hasher) -> list[Replica]:
    """Returns `replicas` in an order that depends only on what `hasher` knows them by.

    Tables built in this order are a function of the membership, never of the order the
    replicas joined: two balancers with the same replicas (or one balancer before and
    after a restart that adopted them) route every key alike. (Envoy fixed the same defect
    in its ring and Maglev by sorting hosts, envoy#20703.)"""
    return sorted(replicas, key=hasher.identity)


def make_hasher(
    name: str,
    h_coefficients: Sequence[int] | None = None,
    phi_coefficients: Sequence[int] | None = None,
    *,
    where: str = "hash",
) -> Hasher:
    """Returns the hasher called `name`; raises ValueError naming the option at fault.

    `where` prefixes messages (e.g. `"ring"`), so they read `ring: hash ...`.
    """
    if not isinstance(name, str):
        raise ValueError(f"{where}: hash ({name!r}) must be a string")
    if name != "poly" and (h_coefficients is not None or phi_coefficients is not None):
        option = "h_coefficients" if h_coefficients is not None else "phi_coefficients"
        raise ValueError(f"{where}: {option} needs hash 'poly' (hash is {name!r})")
    if name in BYTE_HASHES:
        return BytesHasher(name, BYTE_HASHES[name])
    if name == "spec":
        return PolynomialHasher()
    if name == "poly":
        h = _coefficients(where, "h_coefficients", h_coefficients, SPEC_H, None)
        phi = _coefficients(where, "phi_coefficients", phi_coefficients, SPEC_PHI, 4)
        return PolynomialHasher(h, phi, "poly")  # type: ignore[arg-type]
    if ":" in name:
        return BytesHasher(name, _import_function(where, name))
    known = ", ".join(HASH_NAMES)
    raise ValueError(f"{where}: hash ({name!r}) is not a known hash (known: {known})")


def _coefficients(
    where: str,
    option: str,
    value: Sequence[int] | None,
    default: tuple[int, ...],
    length: int | None,
) -> tuple[int, ...]:
    if value is None:
        return default
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, Sequence)
        or not value
        or not all(isinstance(c, int) and not isinstance(c, bool) for c in value)
    ):
        raise ValueError(f"{where}: {option} ({value!r}) must be a list of integers")
    if length is not None and len(value) != length:
        raise ValueError(f"{where}: {option} ({value!r}) must have {length} integers")
    return tuple(value)


def _import_function(where: str, spec: str) -> BytesHash:
    """Returns the callable named by `module:function`, checked to map bytes to an int."""
    module_name, _, attribute = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"{where}: hash ({spec!r}) cannot be imported: {exc}") from None
    try:
        sample = function(b"ringlb")
    except Exception as exc:
        raise ValueError(f"{where}: hash ({spec!r}) failed on b'ringlb': {exc!r}") from None
    if not isinstance(sample, int) or isinstance(sample, bool):
        raise ValueError(f"{where}: hash ({spec!r}) must return an int, got {sample!r}")
    return function
