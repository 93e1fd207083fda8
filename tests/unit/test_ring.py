"""The assignment ring: golden slots derived by hand from CONTRACT.md, and lookups."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ringlb.policies.ring import HashRing, RingFullError, RingParams

# PHI(i, j) = i^2 + j^2 + 2j + 25 (mod 512), j = 0..8, probing +1, +4, +9 on collision:
# replica 1: 26 29 34 41 50 61 74 89 106 (no collision)
# replica 2: 29 -> taken by 1, probe +1 -> 30; then 32 37 44 53 64 77 92 109
# replica 3: 34 -> taken, +1 -> 35; 37 -> taken, +1 -> 38; then 42 49 58 69 82 97 114
GOLDEN = {
    "server_1": [26, 29, 34, 41, 50, 61, 74, 89, 106],
    "server_2": [30, 32, 37, 44, 53, 64, 77, 92, 109],
    "server_3": [35, 38, 42, 49, 58, 69, 82, 97, 114],
}
MEMBERS = [("server_1", 1), ("server_2", 2), ("server_3", 3)]


def by_member(ring: HashRing) -> dict[str, list[int]]:
    result: dict[str, list[int]] = {}
    for slot, member in sorted(ring.slots().items()):
        result.setdefault(member, []).append(slot)
    return result


def test_golden_slots_of_replicas_1_to_3() -> None:
    assert by_member(HashRing(RingParams(), MEMBERS)) == GOLDEN


def naive_lookup(slots: dict[int, str], request_id: int) -> str:
    """Walks slot by slot clockwise from H(i): the specification read literally."""
    slot = (request_id**2 + 2 * request_id + 17) % 512
    while slot not in slots:
        slot = (slot + 1) % 512
    return slots[slot]


def test_lookup_matches_a_literal_reading_of_the_specification() -> None:
    slots = {s: name for name, owned in GOLDEN.items() for s in owned}
    ring = HashRing(RingParams(), MEMBERS)
    rng = random.Random(1)
    for _ in range(5000):
        i = rng.randint(100000, 999999)
        assert ring.lookup(i) == naive_lookup(slots, i)


def test_shares_for_seeded_six_digit_ids() -> None:
    """About 84% / 5% / 11%: the specification's known skew (its analysis task A-4)."""
    ring = HashRing(RingParams(), MEMBERS)
    rng = random.Random(0)
    counts = Counter(ring.lookup(rng.randint(100000, 999999)) for _ in range(10_000))
    assert counts == {"server_1": 8370, "server_2": 511, "server_3": 1119}


def test_wraps_around_past_the_last_virtual_server() -> None:
    ring = HashRing(RingParams(), MEMBERS)
    # H(i) = (i + 1)^2 + 16: i = 15 gives 272, beyond slot 114, so it wraps to slot 26.
    assert ring.slot_of_key(15) == 272
    assert ring.lookup(15) == "server_1"


def test_walk_gives_distinct_members_clockwise() -> None:
    ring = HashRing(RingParams(), MEMBERS)
    # Slot of key 0 is 17: next vnodes clockwise are 26 (1), 29 (1), 30 (2), ... 35 (3).
    assert list(ring.walk(0)) == ["server_1", "server_2", "server_3"]


def test_empty_ring_has_no_owner() -> None:
    ring: HashRing[str] = HashRing(RingParams(), [])
    assert ring.lookup(123456) is None
    assert list(ring.walk(1)) == []


def test_parameters_are_validated_with_their_names() -> None:
    with pytest.raises(ValueError, match=r"ring: vnodes \(0\) must be >= 1"):
        RingParams(vnodes=0)
    with pytest.raises(ValueError, match=r"ring: slots \(0\) must be >= 1"):
        RingParams(slots=0)


def test_custom_hashes_and_sizes_are_parameters() -> None:
    params = RingParams(slots=16, vnodes=2, key_hash=lambda i: i, vnode_hash=lambda i, j: i * 4 + j)
    ring = HashRing(params, [("a", 1), ("b", 2)])
    assert ring.slots() == {4: "a", 5: "a", 8: "b", 9: "b"}
    assert ring.lookup(6) == "b" and ring.lookup(10) == "a"


def test_a_full_ring_is_an_error_not_a_hang() -> None:
    params = RingParams(slots=8, vnodes=3)
    HashRing(params, [("a", 1), ("b", 2)])  # 6 of 8 slots
    with pytest.raises(RingFullError):
        HashRing(params, [("a", 1), ("b", 2), ("c", 3)])


def test_probing_finds_a_free_slot_when_the_quadratic_sequence_cycles() -> None:
    # With 512 slots, +k^2 reaches only some residues; fill all but one slot and check
    # the last vnode still lands on the free one.
    params = RingParams(slots=8, vnodes=1, vnode_hash=lambda i, j: 0)
    ring = HashRing(params, [(f"m{i}", i) for i in range(8)])
    assert sorted(ring.slots()) == list(range(8))
