"""`assignment`: the specification's ring, exactly, as a preset of `ring`.

512 slots, K = log2(512) = 9 virtual servers per replica, `H(i) = i^2 + 2i + 17` on the
request id and `PHI(i, j) = i^2 + j^2 + 2j + 25` on the replica's integer id (the `spec`
hash of `ringlb.policies.hashing`), quadratic probing; no options, no weights. It is
`ring` with `hash=spec,slots=512,vnodes=9` and every weight 1, so it holds 56 replicas.
"""

from __future__ import annotations

from ringlb.policies.ring_hash import RingHashPolicy

SPEC_SLOTS = 512
SPEC_VNODES = 9  # K = log2(512)


class AssignmentPolicy(RingHashPolicy):
    name = "assignment"
    OPTIONS: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__(hash="spec", slots=SPEC_SLOTS, vnodes=SPEC_VNODES, weighted=False)
        self.options = {}
