"""The consistent-hash ring (Karger et al., 1997) as a table, built once per membership.

Each replica owns virtual nodes at points its hasher gives (`hasher.node(replica, j) mod
slots`); a point already taken is resolved by quadratic probing (+1, +4, +9, ...), as the
specification asks. A key goes to the first virtual node clockwise from
`hasher.key(key) mod slots`, wrapping around. `ring` and its preset `assignment` (the
specification's ring) both build theirs here; this is the only copy of the placement.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Container, Generator, Iterable, Iterator, Sequence
from typing import Protocol

from ringlb.model import Replica
from ringlb.policies.base import SLICE_WORK, Layout, first_allowed, run_to_end, sampled_layout


class PointHasher(Protocol):
    """Where keys and virtual nodes sit (see `ringlb.policies.hashing`)."""

    def key(self, key: int) -> int: ...

    def node(self, replica: Replica, j: int) -> int: ...


# A node costs a hash and a probe, a few times a Maglev claim: fewer of them per slice.
NODES_PER_SLICE = SLICE_WORK // 4


class RingFullError(ValueError):
    """Raised when a virtual node finds no free slot."""


class RingPicker:
    """Lookups bisect the sorted node positions within one bucket of a direct index:
    `bounds[b]` is the first node in the b-th of `buckets` equal ranges of the slots. A
    plain bisect over 160,000 positions costs a cache miss per step; this costs one or two.
    """

    __slots__ = ("_bounds", "_buckets", "_count", "_key", "_owners", "_positions", "_slots")

    def __init__(
        self,
        positions: list[int],
        owners: list[Replica],
        key: Callable[[int], int],
        slots: int,
    ) -> None:
        # Contiguous machine words, not a list of int objects scattered over the heap.
        self._positions = array("Q", positions)
        self._owners = owners
        self._count = len(owners)
        self._key = key
        self._slots = slots
        buckets = 1 << max(0, (len(positions) - 1).bit_length())
        bounds = array("q", bytes(8 * (buckets + 1)))
        filled = 0  # bounds[:filled] are set
        for index, position in enumerate(positions):
            last = position * buckets // slots
            while filled <= last:
                bounds[filled] = index
                filled += 1
        while filled <= buckets:
            bounds[filled] = len(positions)
            filled += 1
        self._buckets = buckets
        self._bounds = bounds

    def slot_of_key(self, key: int) -> int:
        return self._key(key) % self._slots

    def _first_node(self, key: int) -> int:
        """Returns the index of the first node clockwise from the key's slot."""
        point = self._key(key) % self._slots
        bucket = point * self._buckets // self._slots
        bounds = self._bounds
        index = bisect_left(self._positions, point, bounds[bucket], bounds[bucket + 1])
        return index if index < self._count else 0

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        if exclude:
            return first_allowed(self.candidates(key), exclude)
        return self._owners[self._first_node(key)]

    def candidates(self, key: int) -> Iterator[Replica]:
        """Yields the distinct replicas clockwise from the key's slot (the retry order)."""
        return distinct_round(self._owners, self._first_node(key))

    def nodes(self) -> list[tuple[int, Replica]]:
        """Returns every virtual node as (slot, owner), in slot order."""
        return list(zip(self._positions, self._owners, strict=True))

    def layout(self) -> Layout:
        """Returns the virtual nodes' slots and owners (a sample when there are many)."""
        return sampled_layout(self._slots, self._owners, self._positions)


def build_ring(
    hasher: PointHasher, slots: int, counts: Iterable[tuple[Replica, int]]
) -> RingPicker:
    """Returns the ring of `counts` (each replica with its number of virtual nodes), placed
    in the order given. A node that finds the ring full is left out."""
    return run_to_end(build_ring_steps(hasher, slots, counts))


def build_ring_steps(
    hasher: PointHasher, slots: int, counts: Iterable[tuple[Replica, int]]
) -> Generator[None, None, RingPicker]:
    """Builds the ring of `build_ring`, yielding after every NODES_PER_SLICE nodes placed."""
    node = hasher.node
    taken: dict[int, Replica] = {}
    placed = 0
    for replica, count in counts:
        for j in range(count):
            if len(taken) >= slots:
                break  # a full ring: later replicas get no node (slots < replicas)
            taken[probe_free_slot(node(replica, j) % slots, slots, taken)] = replica
            placed += 1
            if placed % NODES_PER_SLICE == 0:
                yield
    positions = sorted(taken)
    yield
    return RingPicker(positions, [taken[p] for p in positions], hasher.key, slots)


def distinct_round(owners: Sequence[Replica], start: int) -> Iterator[Replica]:
    """Yields each distinct owner once, going round the list from index `start`."""
    count = len(owners)
    seen: set[Replica] = set()
    for step in range(count):
        owner = owners[(start + step) % count]
        if owner not in seen:
            seen.add(owner)
            yield owner


def probe_free_slot(base: int, slots: int, taken: dict[int, Replica]) -> int:
    """Returns the first free slot on the quadratic probe sequence base + k^2."""
    if len(taken) >= slots:
        raise RingFullError(f"ring: all {slots} slots are taken")
    for k in range(slots):
        slot = (base + k * k) % slots
        if slot not in taken:
            return slot
    # Quadratic probing modulo a non-prime can cycle without visiting every slot; fall back
    # to a linear scan so a free slot is always found while one exists.
    for k in range(slots):
        slot = (base + k) % slots
        if slot not in taken:
            return slot
    raise RingFullError(f"ring: all {slots} slots are taken")  # pragma: no cover
