"""Consistent-hash ring with a fixed number of slots (Karger et al., 1997), pure and synchronous.

Each replica owns `vnodes` virtual servers placed at `vnode_slot(replica_id, j)`; a slot that
is already taken is resolved by quadratic probing (+1, +4, +9, ...), as the assignment asks.
A key lands on `key_slot(key)` and goes to the first virtual server clockwise from there,
wrapping around. The table is built once per membership change; a lookup is one bisect.

The slot count, the number of virtual servers and both hash functions are parameters, so
other presets (and the later `ring` policy) reuse this module unchanged.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

Member = TypeVar("Member", bound=Hashable)

KeyHash = Callable[[int], int]
VnodeHash = Callable[[int, int], int]


def assignment_key_hash(i: int) -> int:
    """H(i) = i^2 + 2i + 17, the specification's request hash (before `mod slots`)."""
    return i * i + 2 * i + 17


def assignment_vnode_hash(i: int, j: int) -> int:
    """PHI(i, j) = i^2 + j^2 + 2j + 25, the specification's virtual-server hash."""
    return i * i + j * j + 2 * j + 25


@dataclass(frozen=True, slots=True)
class RingParams:
    """What defines a ring: slot count, virtual servers per replica and the two hashes."""

    slots: int = 512
    vnodes: int = 9  # K = log2(512)
    key_hash: KeyHash = assignment_key_hash
    vnode_hash: VnodeHash = assignment_vnode_hash

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"ring: slots ({self.slots}) must be >= 1")
        if self.vnodes < 1:
            raise ValueError(f"ring: vnodes ({self.vnodes}) must be >= 1")


class RingFullError(ValueError):
    """Raised when the virtual servers do not fit in the slots."""


class HashRing(Generic[Member]):
    """An immutable ring over `members`, each given as `(member, integer_id)`.

    Members are placed in the order given; that order decides who wins a contested slot,
    so callers pass them in join order to get the same table every time.
    """

    __slots__ = ("_owners", "_params", "_positions", "_slot_owner")

    def __init__(self, params: RingParams, members: Iterable[tuple[Member, int]]) -> None:
        self._params = params
        slots = params.slots
        taken: dict[int, Member] = {}
        for member, member_id in members:
            for j in range(params.vnodes):
                base = params.vnode_hash(member_id, j) % slots
                slot = probe_free_slot(base, slots, taken)
                taken[slot] = member
        self._slot_owner = taken
        self._positions: list[int] = sorted(taken)
        self._owners: list[Member] = [taken[s] for s in self._positions]

    @property
    def params(self) -> RingParams:
        return self._params

    def __len__(self) -> int:
        """Returns the number of virtual servers on the ring."""
        return len(self._positions)

    def slot_of_key(self, key: int) -> int:
        return self._params.key_hash(key) % self._params.slots

    def slots(self) -> dict[int, Member]:
        """Returns slot -> owning member for every virtual server (a copy)."""
        return dict(self._slot_owner)

    def lookup(self, key: int) -> Member | None:
        """Returns the member owning the first virtual server clockwise from the key's slot."""
        owners = self._owners
        if not owners:
            return None
        index = bisect_left(self._positions, self.slot_of_key(key))
        return owners[index if index < len(owners) else 0]

    def walk(self, key: int) -> Iterable[Member]:
        """Yields the distinct members clockwise from the key's slot: the retry order."""
        owners = self._owners
        count = len(owners)
        if not count:
            return
        yield from distinct_round(owners, bisect_left(self._positions, self.slot_of_key(key)))


def distinct_round(owners: Sequence[Member], start: int) -> Iterator[Member]:
    """Yields each distinct owner once, going round the list from index `start`."""
    count = len(owners)
    seen: set[Member] = set()
    for step in range(count):
        owner = owners[(start + step) % count]
        if owner not in seen:
            seen.add(owner)
            yield owner


def probe_free_slot(base: int, slots: int, taken: dict[int, object]) -> int:
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
