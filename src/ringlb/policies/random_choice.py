"""`random`: a replica drawn at random, with probability proportional to its weight.

Randomness is injected (`rng`, or `seed` for a reproducible `random.Random`).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Container, Sequence
from itertools import accumulate

from ringlb.model import Replica
from ringlb.policies.base import EmptyPicker, Picker
from ringlb.policies.options import optional_seed


class RandomPicker:
    __slots__ = ("_cumulative", "_random", "_replicas")

    def __init__(self, replicas: Sequence[Replica], rng: random.Random) -> None:
        self._replicas = tuple(replicas)
        self._cumulative = list(accumulate(r.weight for r in replicas))
        self._random = rng.random

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        if exclude:
            return self._pick_among([r for r in self._replicas if r not in exclude])
        point = self._random() * self._cumulative[-1]
        index = bisect_right(self._cumulative, point)
        return self._replicas[min(index, len(self._replicas) - 1)]

    def _pick_among(self, replicas: list[Replica]) -> Replica | None:
        point = self._random() * sum(r.weight for r in replicas)
        for replica in replicas:
            point -= replica.weight
            if point < 0:
                return replica
        return replicas[-1] if replicas else None


class RandomPolicy:
    name = "random"
    keyed = False
    OPTIONS = ("seed",)

    def __init__(self, *, seed: int | None = None, rng: random.Random | None = None) -> None:
        self.options = {"seed": optional_seed(self.name, seed)}
        self.rng = rng or random.Random(seed)

    def build(self, replicas: Sequence[Replica]) -> Picker:
        if not replicas:
            return EmptyPicker()
        return RandomPicker(replicas, self.rng)
