"""`least_connections`: the replica with the fewest in-flight requests per unit of weight.

Ties go to the replica after the previous winner, so an idle set is used in turn rather than
always starting with the first replica. O(N) per pick.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from ringlb.model import Replica
from ringlb.policies.base import EmptyPicker, Picker


class LeastConnectionsPicker:
    __slots__ = ("_replicas", "_start")

    def __init__(self, replicas: Sequence[Replica]) -> None:
        self._replicas = tuple(replicas)
        self._start = 0

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        replicas = self._replicas
        count = len(replicas)
        best: Replica | None = None
        best_load = 0.0
        best_index = 0
        for step in range(count):
            index = (self._start + step) % count
            replica = replicas[index]
            if replica in exclude:
                continue
            load = replica.inflight / replica.weight
            if best is None or load < best_load:
                best, best_load, best_index = replica, load, index
        self._start = best_index + 1
        return best


class LeastConnectionsPolicy:
    name = "least_connections"
    keyed = False
    OPTIONS = ()

    def __init__(self) -> None:
        self.options: dict[str, object] = {}

    def build(self, replicas: Sequence[Replica]) -> Picker:
        if not replicas:
            return EmptyPicker()
        return LeastConnectionsPicker(replicas)
