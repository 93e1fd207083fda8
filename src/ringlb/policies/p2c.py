"""`p2c`: power of two choices (Mitzenmacher, 2001) on in-flight requests.

Two distinct replicas drawn at random, the one with fewer in-flight requests per unit of
weight wins: nearly the balance of least-connections at O(1) per pick, without herding
every request onto the one replica that just became idle. Randomness is injected.
"""

from __future__ import annotations

import random
from collections.abc import Container, Sequence

from ringlb.model import Replica
from ringlb.policies.base import EmptyPicker, Picker
from ringlb.policies.options import optional_seed


class TwoChoicesPicker:
    __slots__ = ("_random", "_replicas")

    def __init__(self, replicas: Sequence[Replica], rng: random.Random) -> None:
        self._replicas = tuple(replicas)
        self._random = rng.random

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        replicas = self._replicas
        if exclude:
            replicas = tuple(r for r in replicas if r not in exclude)
        count = len(replicas)
        if count <= 1:
            return replicas[0] if count else None
        first = int(self._random() * count)
        second = int(self._random() * (count - 1))
        if second >= first:
            second += 1
        a, b = replicas[first], replicas[second]
        return b if b.inflight / b.weight < a.inflight / a.weight else a


class TwoChoicesPolicy:
    name = "p2c"
    keyed = False
    OPTIONS = ("seed",)

    def __init__(self, *, seed: int | None = None, rng: random.Random | None = None) -> None:
        self.options = {"seed": optional_seed(self.name, seed)}
        self.rng = rng or random.Random(seed)

    def build(self, replicas: Sequence[Replica]) -> Picker:
        if not replicas:
            return EmptyPicker()
        return TwoChoicesPicker(replicas, self.rng)
