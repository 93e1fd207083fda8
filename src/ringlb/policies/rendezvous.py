"""`rendezvous`: highest random weight hashing (Thaler and Ravishankar, 1998).

Every replica scores the key, `score = mix(key point, replica seed)`, and the highest score
wins; removing a replica moves only its own keys, adding one takes exactly the keys it now
wins (1/(N+1) on average). Weighted HRW scores `-w / ln(u)` with `u` the score scaled to
(0, 1) (Schindelhauer and Schomaker's logarithmic method), so a replica wins a share of keys
proportional to its weight. A lookup scores every replica: O(N) per key, by design.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterator, Sequence

from xxhash import xxh64_intdigest

from ringlb.model import Replica
from ringlb.policies.base import EmptyPicker, Picker, equal_weights, first_allowed
from ringlb.policies.hashing import SPACE64, canonical_order, make_hasher


class RendezvousPicker:
    __slots__ = ("_key", "_members", "_weighted")

    def __init__(self, members: list[tuple[Replica, int, float]], key, weighted: bool) -> None:
        self._members = members  # (replica, 64-bit seed, weight)
        self._key = key
        self._weighted = weighted

    def _scores(self, key: int) -> list[tuple[float, Replica]]:
        data = self._key(key).to_bytes(8, "little")
        # xxh64 with the replica's seed is the combining step whatever `hash` is: it is the
        # fastest well-mixed function of (key, replica) available.
        if not self._weighted:
            return [(xxh64_intdigest(data, seed), r) for r, seed, _ in self._members]
        log = math.log
        return [
            (-weight / log((xxh64_intdigest(data, seed) + 0.5) / SPACE64), r)
            for r, seed, weight in self._members
        ]

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        if exclude:
            return first_allowed(self.candidates(key), exclude)
        return max(self._scores(key), key=_score)[1]

    def candidates(self, key: int) -> Iterator[Replica]:
        """Yields every replica, highest score first."""
        for _, replica in sorted(self._scores(key), key=_score, reverse=True):
            yield replica


def _score(item: tuple[float, Replica]) -> float:
    return item[0]


class RendezvousPolicy:
    name = "rendezvous"
    keyed = True
    OPTIONS = ("hash", "h_coefficients", "phi_coefficients")

    def __init__(
        self,
        *,
        hash: str = "xxhash64",
        h_coefficients: list[int] | None = None,
        phi_coefficients: list[int] | None = None,
    ) -> None:
        self.hasher = make_hasher(hash, h_coefficients, phi_coefficients, where=self.name)
        self.options = self.hasher.options()

    def build(self, replicas: Sequence[Replica]) -> Picker:
        if not replicas:
            return EmptyPicker()
        node = self.hasher.node
        # Equal scores go to the first listed: list in an order of the membership alone.
        ordered = canonical_order(replicas, self.hasher)
        members = [(r, node(r, 0) & (SPACE64 - 1), r.weight) for r in ordered]
        return RendezvousPicker(members, self._key, not equal_weights(replicas))

    def _key(self, key: int) -> int:
        return self.hasher.key(key) & (SPACE64 - 1)
