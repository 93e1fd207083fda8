"""`round_robin`: replicas in turn; with weights, nginx's smooth weighted round robin.

Smooth WRR: on each pick every replica's `current` grows by its weight, the largest wins and
gives back the total, so weights 5:1:1 give a a b a c a a rather than a a a a a b c.
The turn counter is the only state; it lives in the picker and restarts at a rebuild.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from ringlb.model import Replica
from ringlb.policies.base import EmptyPicker, Picker, equal_weights


class RoundRobinPicker:
    __slots__ = ("_next", "_replicas")

    def __init__(self, replicas: Sequence[Replica]) -> None:
        self._replicas = tuple(replicas)
        self._next = 0

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        replicas = self._replicas
        count = len(replicas)
        if not exclude and count:  # the first pick of a request: no loop needed
            turn = self._next
            self._next = turn + 1
            return replicas[turn % count]
        for _ in range(count):
            replica = replicas[self._next % count]
            self._next += 1
            if replica not in exclude:
                return replica
        return None


class SmoothWeightedPicker:
    __slots__ = ("_current", "_replicas")

    def __init__(self, replicas: Sequence[Replica]) -> None:
        self._replicas = tuple(replicas)
        self._current = [0.0] * len(replicas)

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        current = self._current
        best = -1
        total = 0.0
        for i, replica in enumerate(self._replicas):
            if replica in exclude:
                continue
            current[i] += replica.weight
            total += replica.weight
            if best < 0 or current[i] > current[best]:
                best = i
        if best < 0:
            return None
        current[best] -= total
        return self._replicas[best]


class RoundRobinPolicy:
    name = "round_robin"
    keyed = False
    OPTIONS = ()

    def __init__(self) -> None:
        self.options: dict[str, object] = {}

    def build(self, replicas: Sequence[Replica]) -> Picker:
        if not replicas:
            return EmptyPicker()
        if equal_weights(replicas):
            return RoundRobinPicker(replicas)
        return SmoothWeightedPicker(replicas)
