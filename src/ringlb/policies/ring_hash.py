"""`ring`: a Karger/ketama consistent-hash ring with a chosen hash, slot count and vnodes.

Each replica owns `vnodes x weight` virtual nodes at `hasher.node(replica, j) mod slots`
(a taken slot is resolved by the same quadratic probing as the `assignment` ring); a key
goes to the first virtual node clockwise from `hasher.key(key) mod slots`. With a 64-bit
hash and many virtual nodes the arcs even out (the load spread shrinks like 1/sqrt(vnodes));
adding a replica only takes keys from the arcs its new nodes split.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Container, Iterator, Sequence

from ringlb.model import Replica
from ringlb.policies.base import EmptyPicker, Layout, Picker, first_allowed, sampled_layout
from ringlb.policies.hashing import SPACE64, make_hasher
from ringlb.policies.options import PolicyError, integer
from ringlb.policies.ring import distinct_round, probe_free_slot

UNIFORM_DEFAULT_SLOTS = 1 << 32  # ketama's continuum
POLYNOMIAL_DEFAULT_SLOTS = 512  # the specification's ring
# Virtual nodes per replica: at 50 replicas this bounds a rebuild to 500,000 points.
MAX_VNODES = 10_000


class RingHashPicker:
    """Lookups bisect the sorted node positions within one bucket of a direct index:
    `bounds[b]` is the first node in the b-th of `buckets` equal ranges of the slots. A
    plain bisect over 160,000 positions costs a cache miss per step; this costs one or two.
    """

    __slots__ = ("_bounds", "_buckets", "_count", "_key", "_owners", "_positions", "_slots")

    def __init__(self, positions: list[int], owners: list[Replica], key, slots: int) -> None:
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
        """Yields the distinct replicas clockwise from the key's slot."""
        return distinct_round(self._owners, self._first_node(key))

    def layout(self) -> Layout:
        """Returns the virtual nodes' slots and owners (a sample when there are many)."""
        return sampled_layout(self._slots, self._owners, self._positions)


class RingHashPolicy:
    name = "ring"
    keyed = True
    OPTIONS = ("hash", "vnodes", "slots", "h_coefficients", "phi_coefficients")

    def __init__(
        self,
        *,
        hash: str = "xxhash64",
        vnodes: int = 160,
        slots: int | None = None,
        h_coefficients: list[int] | None = None,
        phi_coefficients: list[int] | None = None,
    ) -> None:
        self.hasher = make_hasher(hash, h_coefficients, phi_coefficients, where=self.name)
        self.vnodes = integer(self.name, "vnodes", vnodes, 1, MAX_VNODES)
        if slots is None:
            slots = UNIFORM_DEFAULT_SLOTS if self.hasher.uniform else POLYNOMIAL_DEFAULT_SLOTS
        self.slots = integer(self.name, "slots", slots, 1)
        if self.slots > SPACE64:
            raise PolicyError(f"ring: slots ({self.slots}) must be <= 2^64")
        self.options = {**self.hasher.options(), "vnodes": self.vnodes, "slots": self.slots}

    def vnode_counts(self, replicas: Sequence[Replica]) -> list[int]:
        """Returns each replica's virtual-node count: vnodes x weight (at least 1), scaled
        down together when they would not fit in the slots."""
        per_weight = self.vnodes
        total_weight = sum(r.weight for r in replicas)
        if per_weight * total_weight > self.slots:
            per_weight = max(1, int(self.slots / total_weight))
        return [max(1, round(per_weight * r.weight)) for r in replicas]

    def build(self, replicas: Sequence[Replica]) -> Picker:
        if not replicas:
            return EmptyPicker()
        slots, node = self.slots, self.hasher.node
        taken: dict[int, Replica] = {}
        for replica, count in zip(replicas, self.vnode_counts(replicas), strict=True):
            for j in range(count):
                if len(taken) >= slots:
                    break  # a full ring: later replicas get no node (slots < replicas)
                taken[probe_free_slot(node(replica, j) % slots, slots, taken)] = replica
        positions = sorted(taken)
        return RingHashPicker(positions, [taken[p] for p in positions], self.hasher.key, slots)
