"""The assignment ring: golden slots derived by hand from CONTRACT.md, and lookups."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ringlb.model import Replica
from ringlb.policies import make_policy
from ringlb.policies.assignment import AssignmentPolicy
from ringlb.policies.ring import RingFullError, RingPicker, build_ring, probe_free_slot
from ringlb.policies.ring_hash import RingHashPolicy

# PHI(i, j) = i^2 + j^2 + 2j + 25 (mod 512), j = 0..8, probing +1, +4, +9 on collision:
# replica 1: 26 29 34 41 50 61 74 89 106 (no collision)
# replica 2: 29 -> taken by 1, probe +1 -> 30; then 32 37 44 53 64 77 92 109
# replica 3: 34 -> taken, +1 -> 35; 37 -> taken, +1 -> 38; then 42 49 58 69 82 97 114
GOLDEN = {
    "server_1": [26, 29, 34, 41, 50, 61, 74, 89, 106],
    "server_2": [30, 32, 37, 44, 53, 64, 77, 92, 109],
    "server_3": [35, 38, 42, 49, 58, 69, 82, 97, 114],
}
REPLICAS = [Replica(f"server_{i}", i, "127.0.0.1", 0) for i in (1, 2, 3)]


def assignment_ring(replicas=REPLICAS) -> RingPicker:
    ring = AssignmentPolicy().build(replicas)
    assert isinstance(ring, RingPicker)
    return ring


def by_member(ring: RingPicker) -> dict[str, list[int]]:
    result: dict[str, list[int]] = {}
    for slot, member in ring.nodes():
        result.setdefault(member.name, []).append(slot)
    return result


def lookup(ring: RingPicker, key: int) -> str:
    replica = ring.pick(key)
    assert replica is not None
    return replica.name


def test_golden_slots_of_replicas_1_to_3() -> None:
    assert by_member(assignment_ring()) == GOLDEN


def test_assignment_is_the_ring_policy_with_the_spec_hash_512_slots_and_9_vnodes() -> None:
    preset = assignment_ring()
    ring = make_policy("ring", hash="spec", slots=512, vnodes=9).build(REPLICAS)
    assert isinstance(ring, RingPicker) and ring.nodes() == preset.nodes()
    rng = random.Random(3)
    for _ in range(2000):
        key = rng.randint(100000, 999999)
        assert ring.pick(key) is preset.pick(key)


def test_assignment_takes_no_options_nor_weights_and_holds_56_replicas() -> None:
    policy = AssignmentPolicy()
    heavy = [Replica(r.name, r.rid, "", 0, weight=5.0) for r in REPLICAS]
    assert by_member(policy.build(heavy)) == GOLDEN  # type: ignore[arg-type]
    assert policy.capacity == 56 and policy.options == {}
    with pytest.raises(ValueError, match="assignment: unknown option 'vnodes'"):
        make_policy("assignment", vnodes=10)


def naive_lookup(slots: dict[int, str], request_id: int) -> str:
    """Walks slot by slot clockwise from H(i): the specification read literally."""
    slot = (request_id**2 + 2 * request_id + 17) % 512
    while slot not in slots:
        slot = (slot + 1) % 512
    return slots[slot]


def test_lookup_matches_a_literal_reading_of_the_specification() -> None:
    slots = {s: name for name, owned in GOLDEN.items() for s in owned}
    ring = assignment_ring()
    rng = random.Random(1)
    for _ in range(5000):
        i = rng.randint(100000, 999999)
        assert lookup(ring, i) == naive_lookup(slots, i)


def test_shares_for_seeded_six_digit_ids() -> None:
    """About 84% / 5% / 11%: the specification's known skew (its analysis task A-4)."""
    ring = assignment_ring()
    rng = random.Random(0)
    counts = Counter(lookup(ring, rng.randint(100000, 999999)) for _ in range(10_000))
    assert counts == {"server_1": 8370, "server_2": 511, "server_3": 1119}


def test_wraps_around_past_the_last_virtual_server() -> None:
    ring = assignment_ring()
    # H(i) = (i + 1)^2 + 16: i = 15 gives 272, beyond slot 114, so it wraps to slot 26.
    assert ring.slot_of_key(15) == 272
    assert lookup(ring, 15) == "server_1"


def test_candidates_are_the_distinct_replicas_clockwise() -> None:
    ring = assignment_ring()
    # Slot of key 0 is 17: next vnodes clockwise are 26 (1), 29 (1), 30 (2), ... 35 (3).
    assert [r.name for r in ring.candidates(0)] == ["server_1", "server_2", "server_3"]
    assert lookup_excluding(ring, 0, REPLICAS[0]) == "server_2"


def lookup_excluding(ring: RingPicker, key: int, excluded: Replica) -> str:
    replica = ring.pick(key, (excluded,))
    assert replica is not None
    return replica.name


def test_parameters_are_validated_with_their_names() -> None:
    with pytest.raises(ValueError, match=r"ring: vnodes \(0\) must be >= 1"):
        RingHashPolicy(vnodes=0)
    with pytest.raises(ValueError, match=r"ring: slots \(0\) must be >= 1"):
        RingHashPolicy(slots=0)


class Identity:
    """Points as the test says: a key at itself, replica i's node j at 4i + j."""

    def key(self, key: int) -> int:
        return key

    def node(self, replica: Replica, j: int) -> int:
        return replica.rid * 4 + j


def test_custom_hashes_and_sizes_are_parameters() -> None:
    a, b = Replica("a", 1, "", 0), Replica("b", 2, "", 0)
    ring = build_ring(Identity(), 16, [(a, 2), (b, 2)])
    assert ring.nodes() == [(4, a), (5, a), (8, b), (9, b)]
    assert ring.pick(6) is b and ring.pick(10) is a


def test_a_full_ring_leaves_later_nodes_out_instead_of_hanging() -> None:
    members = [Replica(name, i, "", 0) for i, name in enumerate("abc", 1)]
    ring = build_ring(Identity(), 8, [(m, 3) for m in members])
    assert len(ring.nodes()) == 8
    with pytest.raises(RingFullError):
        probe_free_slot(0, 8, dict.fromkeys(range(8), members[0]))


def test_probing_finds_a_free_slot_when_the_quadratic_sequence_cycles() -> None:
    # +k^2 modulo 8 reaches only some residues; with all slots but one taken, the last
    # node still lands on the free one.
    taken = {slot: Replica("m", 1, "", 0) for slot in range(8) if slot != 7}
    assert probe_free_slot(0, 8, taken) == 7
