"""Routing tables built in slices: the same tables as a one-shot build, an interim snapshot
that skips leavers while a table builds, and builds that a newer change supersedes."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringlb.control.tables import TableBuilder
from ringlb.model import Replica, Snapshot
from ringlb.policies import make_policy
from ringlb.policies.base import build_in_slices, picker_from_shared, run_to_end, table_to_share

SLICED = [
    ("maglev", {"table_size": 5003}),
    ("maglev", {"table_size": 5003, "bounded": True}),
    ("ring", {"vnodes": 200}),
    ("ring", {"hash": "spec", "slots": 512, "vnodes": 9}),
    ("rendezvous", {}),
]


def named(names: list[str], weights: list[float] | None = None) -> list[Replica]:
    weights = weights or [1.0] * len(names)
    return [
        Replica(name, i + 1, "127.0.0.1", 0, weight=w)
        for i, (name, w) in enumerate(zip(names, weights, strict=True))
    ]


def owners(picker, keys: range) -> list[str | None]:
    return [(r.name if (r := picker.pick(k)) is not None else None) for k in keys]


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    variant=st.sampled_from(SLICED),
    names=st.lists(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), max_size=12, unique=True),
)
def test_a_build_in_slices_gives_the_one_shot_table(data, variant, names: list[str]) -> None:
    name, options = variant
    weights = data.draw(
        st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0]), min_size=len(names), max_size=len(names))
    )
    group = named(names, weights)
    policy = make_policy(name, **options)
    steps = build_in_slices(policy, group)
    slices = 0
    while True:
        try:
            next(steps)
            slices += 1
        except StopIteration as done:
            sliced = done.value
            break
    keys = range(0, 200_000, 97)
    assert owners(sliced, keys) == owners(policy.build(group), keys)
    assert run_to_end(build_in_slices(policy, group)) is not sliced


def test_the_default_maglev_table_builds_in_slices_of_a_few_milliseconds() -> None:
    """Prints the figures (no timed assertion: the machines are noisy)."""
    policy = make_policy("maglev")
    group = named([f"server_{i}" for i in range(10)])
    steps = build_in_slices(policy, group)
    worst, count = 0.0, 0
    while True:
        began = time.thread_time()  # CPU time: a preemption by the OS is not the build's
        try:
            next(steps)
        except StopIteration:
            break
        finally:
            worst = max(worst, time.thread_time() - began)
            count += 1
    print(f"\nmaglev 65537 x 10 replicas: {count} slices, longest {worst * 1e3:.2f} ms of CPU")
    assert count > 10


class Published:
    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def __call__(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)

    @property
    def last(self) -> Snapshot:
        return self.snapshots[-1]


async def test_while_a_table_builds_the_interim_skips_leavers_and_holds_no_joiner() -> None:
    policy = make_policy("maglev")
    published = Published()
    builder = TableBuilder(policy, published)
    a, b, c, d = named(["a", "b", "c", "d"])
    builder.rebuild(1, [a, b, c], policy)
    await builder.settled()
    complete = published.last
    assert complete.version == 1 and complete.names() == ["a", "b", "c"]

    # b leaves and d joins: the interim routes on the old table without b, never to d.
    builder.rebuild(2, [a, c, d], policy)
    interim = published.last
    assert not builder.complete.is_set()
    assert interim.version == 2 and interim.names() == ["a", "c"]
    picked = {interim.picker.pick(k) for k in range(3000)}
    assert picked == {a, c}
    assert {interim.picker.pick(k, {a}) for k in range(300)} == {c}
    for k in range(3000):  # keys of a and c stay where they were
        if complete.picker.pick(k) is not b:
            assert interim.picker.pick(k) is complete.picker.pick(k)

    await builder.settled()
    final = published.last
    assert final.version == 2 and final.names() == ["a", "c", "d"]
    assert owners(final.picker, range(5000)) == owners(policy.build([a, c, d]), range(5000))
    assert builder.builds_sliced == 2


async def test_a_newer_change_supersedes_a_build_in_progress() -> None:
    policy = make_policy("maglev")
    published = Published()
    builder = TableBuilder(policy, published)
    a, b, c = named(["a", "b", "c"])
    builder.rebuild(1, [a, b], policy)
    builder.rebuild(2, [a, b, c], policy)
    await builder.settled()
    await asyncio.sleep(0.05)  # a superseded build would publish after this
    assert published.last.version == 2 and published.last.names() == ["a", "b", "c"]
    versions = [s.version for s in published.snapshots]
    assert versions == sorted(versions)  # nothing of version 1 came after version 2


def test_a_cheap_build_is_published_at_once() -> None:
    policy = make_policy("round_robin")
    published = Published()
    builder = TableBuilder(policy, published)
    a, b = named(["a", "b"])
    builder.rebuild(1, [a, b], policy)
    assert builder.complete.is_set() and published.last.names() == ["a", "b"]
    assert builder.builds_sliced == 0


@pytest.mark.parametrize("policy_name", ["maglev", "ring"])
def test_without_an_event_loop_the_table_builds_at_once(policy_name: str) -> None:
    policy = make_policy(policy_name)
    published = Published()
    builder = TableBuilder(policy, published)
    group = named([f"s{i}" for i in range(5)])
    builder.rebuild(1, group, policy)
    assert builder.complete.is_set() and published.last.names() == [r.name for r in group]


@settings(max_examples=30, deadline=None)
@given(
    bounded=st.booleans(),
    weights=st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=1, max_size=9),
)
def test_a_shared_maglev_table_makes_the_picker_its_build_makes(
    bounded: bool, weights: list[float]
) -> None:
    policy = make_policy("maglev", table_size=5003, bounded=bounded)
    group = named([f"s{i}" for i in range(len(weights))], weights)
    built = policy.build(group)
    shared = table_to_share(built)
    assert shared is not None and len(shared) == 5003  # one byte an entry under 256 replicas
    # The receiving side has replicas of its own, alike and in the same order.
    theirs = named([r.name for r in group], weights)
    made = picker_from_shared(policy, theirs, shared)
    assert made is not None
    assert owners(made, range(20_000)) == owners(built, range(20_000))
    assert set(made.pick(k) for k in range(2000)) <= set(theirs)
    assert [r.name for r in made.candidates(12345)] == [r.name for r in built.candidates(12345)]


def test_a_shared_table_that_cannot_be_the_policys_is_refused() -> None:
    policy = make_policy("maglev", table_size=5003)
    group = named(["a", "b", "c"])
    shared = table_to_share(policy.build(group))
    assert shared is not None
    with pytest.raises(ValueError, match=r"maglev: a shared table of 5003 entries does not fit"):
        picker_from_shared(policy, group[:2], shared)  # index 2 has no replica
    with pytest.raises(ValueError, match=r"a shared table of 4999 entries does not fit a table"):
        picker_from_shared(policy, group, shared[:4999])


@pytest.mark.parametrize("name", ["ring", "rendezvous", "round_robin", "assignment"])
def test_policies_whose_build_is_cheap_share_no_table(name: str) -> None:
    policy = make_policy(name)
    assert table_to_share(policy.build(named(["a", "b"]))) is None
    assert picker_from_shared(policy, named(["a", "b"]), b"\x00\x01") is None


async def test_a_build_in_progress_ends_at_once_with_the_picker_made_elsewhere() -> None:
    policy = make_policy("maglev")
    published = Published()
    builder = TableBuilder(policy, published)
    completed: list[Snapshot] = []
    builder.on_complete.append(completed.append)
    group = named(["a", "b", "c"])
    builder.rebuild(1, group, policy)
    assert not builder.complete.is_set()
    elsewhere = policy.build(group)
    assert not builder.adopt(2, elsewhere)  # not the version building
    assert builder.adopt(1, elsewhere)
    assert builder.complete.is_set() and published.last.picker is elsewhere
    assert [(s.version, s.picker) for s in completed] == [(1, elsewhere)]
    assert not builder.adopt(1, elsewhere)  # nothing builds any more
    await asyncio.sleep(0.05)  # the build it ended publishes nothing after it
    assert published.last.picker is elsewhere and len(completed) == 1
