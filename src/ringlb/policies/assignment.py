"""`assignment`: the specification's ring (512 slots, K=9, H and PHI polynomials)."""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence

from ringlb.model import Replica
from ringlb.policies.base import EmptyPicker, Layout, Picker, sampled_layout
from ringlb.policies.ring import HashRing, RingParams


class RingPicker:
    """Routes a key to the first replica clockwise on a `HashRing` of replica ids."""

    __slots__ = ("ring",)

    def __init__(self, ring: HashRing[Replica]) -> None:
        self.ring = ring

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        if not exclude:
            return self.ring.lookup(key)
        for replica in self.ring.walk(key):
            if replica not in exclude:
                return replica
        return None

    def candidates(self, key: int) -> Iterator[Replica]:
        """Yields the distinct replicas clockwise from the key's slot (for bounded loads)."""
        return iter(self.ring.walk(key))

    def layout(self) -> Layout:
        """Returns every virtual server's slot and owner."""
        slots = sorted(self.ring.slots().items())
        return sampled_layout(
            self.ring.params.slots, [owner for _, owner in slots], [slot for slot, _ in slots]
        )


class AssignmentPolicy:
    name = "assignment"
    keyed = True
    OPTIONS: tuple[str, ...] = ()

    def __init__(self, params: RingParams | None = None) -> None:
        self.params = params or RingParams()
        self.options: dict[str, object] = {}
        # Every replica needs `vnodes` free slots: beyond this the ring cannot be built.
        self.capacity = self.params.slots // self.params.vnodes

    def build(self, replicas: Sequence[Replica]) -> Picker:
        if not replicas:
            return EmptyPicker()
        return RingPicker(HashRing(self.params, ((r, r.rid) for r in replicas)))
