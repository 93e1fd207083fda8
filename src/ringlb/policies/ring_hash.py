"""`ring`: a Karger/ketama consistent-hash ring with a chosen hash, slot count and vnodes.

Each replica owns `vnodes x weight` virtual nodes (see `ringlb.policies.ring` for the
placement and the lookup). With a 64-bit hash and many virtual nodes the arcs even out (the
load spread shrinks like 1/sqrt(vnodes)); adding a replica only takes keys from the arcs
its new nodes split. With `weighted` false every replica has exactly `vnodes` nodes, and
the ring holds at most `slots // vnodes` replicas (the `assignment` preset).
"""

from __future__ import annotations

from collections.abc import Sequence

from ringlb.model import Replica
from ringlb.policies.base import BuildSteps, EmptyPicker, Picker, run_to_end
from ringlb.policies.hashing import SPACE64, canonical_order, make_hasher
from ringlb.policies.options import PolicyError, integer
from ringlb.policies.ring import build_ring_steps

UNIFORM_DEFAULT_SLOTS = 1 << 32  # ketama's continuum
POLYNOMIAL_DEFAULT_SLOTS = 512  # the specification's ring
# Virtual nodes per replica: at 50 replicas this bounds a rebuild to 500,000 points.
MAX_VNODES = 10_000


class RingHashPolicy:
    name = "ring"
    keyed = True
    OPTIONS: tuple[str, ...] = ("hash", "vnodes", "slots", "h_coefficients", "phi_coefficients")

    def __init__(
        self,
        *,
        hash: str = "xxhash64",
        vnodes: int = 160,
        slots: int | None = None,
        h_coefficients: list[int] | None = None,
        phi_coefficients: list[int] | None = None,
        weighted: bool = True,
    ) -> None:
        self.hasher = make_hasher(hash, h_coefficients, phi_coefficients, where=self.name)
        self.vnodes = integer(self.name, "vnodes", vnodes, 1, MAX_VNODES)
        if slots is None:
            slots = UNIFORM_DEFAULT_SLOTS if self.hasher.uniform else POLYNOMIAL_DEFAULT_SLOTS
        self.slots = integer(self.name, "slots", slots, 1)
        if self.slots > SPACE64:
            raise PolicyError(f"ring: slots ({self.slots}) must be <= 2^64")
        self.weighted = weighted
        # Nodes are never scaled down to fit when unweighted: so many replicas at most.
        self.capacity: int | None = None if weighted else self.slots // self.vnodes
        self.options: dict[str, object] = {
            **self.hasher.options(),
            "vnodes": self.vnodes,
            "slots": self.slots,
        }

    def vnode_counts(self, replicas: Sequence[Replica]) -> list[int]:
        """Returns each replica's virtual-node count: vnodes x weight (at least 1), scaled
        down together when they would not fit in the slots; `vnodes` each when unweighted."""
        if not self.weighted:
            return [self.vnodes] * len(replicas)
        per_weight = self.vnodes
        total_weight = sum(r.weight for r in replicas)
        if per_weight * total_weight > self.slots:
            per_weight = max(1, int(self.slots / total_weight))
        return [max(1, round(per_weight * r.weight)) for r in replicas]

    def build(self, replicas: Sequence[Replica]) -> Picker:
        return run_to_end(self.build_steps(replicas))

    def build_steps(self, replicas: Sequence[Replica]) -> BuildSteps:
        """Builds the picker in slices (see `ringlb.policies.base.build_in_slices`)."""
        if not replicas:
            return EmptyPicker()
        # Contested slots go to the first placed: place in an order of the membership alone.
        replicas = canonical_order(replicas, self.hasher)
        counts = zip(replicas, self.vnode_counts(replicas), strict=True)
        return (yield from build_ring_steps(self.hasher, self.slots, counts))
