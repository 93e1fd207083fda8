"""Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, SODA 2018).

Wraps a hash policy: a key goes to its first candidate (the hash policy's own order) whose
in-flight count is below its capacity `ceil(c x m x weight / total weight)`, where m is the
number of in-flight requests counting this one and c >= 1 the load factor. No replica then
holds more than about c times its share, and a key moves only while its replica is busy.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterator, Sequence

from ringlb.model import Replica
from ringlb.policies.base import (
    BuildSteps,
    EmptyPicker,
    KeyedPicker,
    Layout,
    Picker,
    Policy,
    build_in_slices,
    picker_from_shared,
    run_to_end,
    shares_tables,
    table_to_share,
)


class BoundedPicker:
    __slots__ = ("_inner", "_load_factor", "_replicas", "_total_weight")

    def __init__(self, inner: KeyedPicker, replicas: Sequence[Replica], load_factor: float):
        self._inner = inner
        self._replicas = tuple(replicas)
        self._total_weight = sum(r.weight for r in replicas)
        self._load_factor = load_factor

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        if not exclude:
            # The common case, without a generator: the key's own choice is idle.
            choice = self._inner.pick(key)
            if choice is not None and not choice.inflight:
                return choice
        first: Replica | None = None
        scale = 0.0
        for replica in self._inner.candidates(key):
            if replica in exclude:
                continue
            if not replica.inflight:
                return replica  # every capacity is >= 1: an idle replica always has room
            if first is None:
                first = replica
                # Computed only when the first choice is busy: O(N) over the in-flight counts.
                in_flight = sum(r.inflight for r in self._replicas) + 1
                scale = self._load_factor * in_flight / self._total_weight
            if replica.inflight < math.ceil(scale * replica.weight):
                return replica
        # Every allowed replica is at capacity (the room is on excluded ones): the key's own
        # first choice, as without bounds.
        return first

    def candidates(self, key: int) -> Iterator[Replica]:
        return self._inner.candidates(key)

    def shared_table(self) -> bytes | None:
        """Returns the wrapped picker's table to share (bounds add no table of their own)."""
        return table_to_share(self._inner)

    def layout(self) -> Layout | None:
        """Returns the wrapped hash policy's layout (bounds move keys, not positions)."""
        layout = getattr(self._inner, "layout", None)
        return layout() if layout is not None else None


class BoundedPolicy:
    """`inner` with bounded loads; reports the inner policy's name and options."""

    keyed = True

    def __init__(self, inner: Policy, load_factor: float) -> None:
        self.inner = inner
        self.name = inner.name
        self.load_factor = load_factor
        # A ring that holds at most so many replicas still does with bounds.
        self.capacity: int | None = getattr(inner, "capacity", None)
        self.shares_tables = shares_tables(inner)  # the table is the inner picker's
        self.options = {
            **getattr(inner, "options", {}),
            "bounded": True,
            "load_factor": load_factor,
        }

    def build(self, replicas: Sequence[Replica]) -> Picker:
        return run_to_end(self.build_steps(replicas))

    def from_shared_table(self, replicas: Sequence[Replica], table: bytes) -> Picker:
        """Returns the wrapped policy's picker made from `table`, wrapped."""
        inner = picker_from_shared(self.inner, replicas, table)
        assert inner is not None, "from_shared_table of a policy that shares no tables"
        return BoundedPicker(inner, replicas, self.load_factor)  # type: ignore[arg-type]

    def build_steps(self, replicas: Sequence[Replica]) -> BuildSteps:
        """Builds the inner policy's picker in slices, then wraps it."""
        picker = yield from build_in_slices(self.inner, replicas)
        if not replicas:
            return EmptyPicker()
        return BoundedPicker(picker, replicas, self.load_factor)  # type: ignore[arg-type]
