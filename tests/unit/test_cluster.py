"""Several balancers on one membership, in-process: ReplicaSets and Clusters on the shipped
fake runtime (`beside()`: the same replicas, one in-memory lease store) and a manual clock.
The relay over real HTTP, and kills of real balancers, are in tests/swarm."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Coroutine
from typing import Any

import pytest

from ringlb import contract
from ringlb.clock import ManualClock
from ringlb.contract import MembershipRequest
from ringlb.control.cluster import Cluster, LeadershipLost
from ringlb.control.membership import MemberState, ReplicaSet
from ringlb.control.outliers import OutlierRules
from ringlb.model import Replica
from ringlb.policies import REGISTRY, make_policy
from ringlb.runtimes.fake import FakeRuntime, MemoryLeaseStore

LEASE, RENEW, SYNC = 3.0, 1.0, 0.5
HASH_POLICIES = [name for name in REGISTRY if getattr(make_policy(name), "keyed", False)]


class Balancer:
    """What a balancer holds of the cluster: its membership and its part in the lease."""

    def __init__(self, name: str, runtime: FakeRuntime, clock: ManualClock, policy: str) -> None:
        self.runtime = runtime
        self.down: set[str] = set()  # replicas whose heartbeat fails from here
        self.rs = ReplicaSet(
            runtime,
            make_policy(policy),
            self.probe,
            max_replicas=20,
            start_timeout=5.0,
            drain_timeout=1.0,
            outliers=OutlierRules(3, 10.0, 2),
            rng=random.Random(name),
            clock=clock,
        )
        assert runtime.lease is not None
        self.cluster = Cluster(
            runtime.lease,
            self.rs,
            runtime,
            self.probe,
            name=name,
            lease_time=LEASE,
            renew_interval=RENEW,
            sync_interval=SYNC,
            write_timeout=5.0,
            clock=clock,
        )

    async def probe(self, replica: Replica) -> bool:
        return replica.name not in self.down

    async def add(self, *names: str, n: int | None = None) -> list[str]:
        request = MembershipRequest(n=len(names) if n is None else n, hostnames=names)
        return await self.rs.add(request)

    def route(self, key: int) -> str:
        picked = self.rs.snapshot.picker.pick(key)
        assert picked is not None
        return picked.name


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def pair(policy: str = "maglev") -> tuple[Balancer, Balancer, ManualClock]:
    clock = ManualClock()
    runtime = FakeRuntime(lease=MemoryLeaseStore())
    return (
        Balancer("a", runtime, clock, policy),
        Balancer("b", runtime.beside(), clock, policy),
        clock,
    )


async def joined(policy: str = "maglev") -> tuple[Balancer, Balancer, ManualClock]:
    """A pair that has read the lease: `a` leads (it read it first), `b` follows."""
    a, b, clock = pair(policy)
    await a.cluster.join("a:5000")
    await b.cluster.join("b:5000")
    return a, b, clock


@pytest.mark.parametrize("policy", HASH_POLICIES)
def test_a_follower_mirrors_the_leaders_replicas_and_routes_10000_keys_alike(
    policy: str,
) -> None:
    async def go() -> None:
        a, b, _ = await joined(policy)
        assert (a.cluster.leading, b.cluster.leading) == (True, False)
        await a.add("S1", "S2", n=4)
        await a.add(n=2)
        async with a.rs.lock:
            await a.rs.retire(["S2"])  # a removal leaves a gap in the ring ids
        await b.cluster.sync()
        await a.rs.settled()
        await b.rs.settled()
        assert b.rs.snapshot.names() == a.rs.snapshot.names()
        assert len(a.rs.snapshot.names()) == 5
        keys = random.Random(7).sample(range(10**6), 10_000)
        agreed = sum(a.route(key) == b.route(key) for key in keys)
        assert agreed == 10_000
        assert b.runtime.started == [], "a follower started a replica"

    run(go())


def test_a_follower_takes_the_policy_and_target_the_leader_publishes() -> None:
    async def go() -> None:
        a, b, clock = await joined("maglev")
        await a.add(n=3)
        a.rs.set_policy(make_policy("ring", vnodes=50))
        clock.advance(RENEW)
        await a.cluster.lease.step()  # the renewal publishes the target and the policy
        await b.cluster.lease.step()
        await b.cluster.sync()
        assert b.rs.target == 3
        assert b.rs.policy.name == "ring" and b.rs.policy.options["vnodes"] == 50
        # A policy set through b (relayed, then taken from the leader's answer) is not
        # undone by the record, which shows it only from the leader's next renewal.
        a.rs.set_policy(make_policy("rendezvous"))
        b.rs.set_policy(make_policy("rendezvous"))
        await b.cluster.sync()
        assert b.rs.policy.name == "rendezvous"
        clock.advance(RENEW)
        await a.cluster.lease.step()
        await b.cluster.lease.step()
        await b.cluster.sync()
        assert b.rs.policy.name == "rendezvous"

    run(go())


def test_a_follower_drops_a_replica_it_cannot_reach_and_takes_it_back_when_it_answers() -> None:
    async def go() -> None:
        a, b, _ = await joined()
        await a.add("S1", "S2", "S3")
        await b.cluster.sync()
        await b.rs.settled()
        assert b.rs.snapshot.names() == ["S1", "S2", "S3"]
        b.down.add("S2")
        b.rs.report_death("S2")  # its heartbeats fail from b only
        await b.rs.settled()
        assert b.rs.snapshot.names() == ["S1", "S3"]
        await b.cluster.sync()
        assert [r.name for r, _ in b.rs.members()] == ["S1", "S3"]
        assert b.rs.dead.empty(), "a follower queued a replacement"
        b.down.clear()
        await b.cluster.sync()
        await b.rs.settled()
        await a.rs.settled()
        assert b.rs.snapshot.names() == ["S1", "S2", "S3"] == a.rs.snapshot.names()
        assert a.runtime.stopped == [] and b.runtime.started == []

    run(go())


def test_a_follower_takes_over_once_when_the_lease_runs_out_and_leads_until_it_loses_it() -> None:
    async def go() -> None:
        a, b, clock = await joined()
        await a.add(n=3)
        clock.advance(RENEW)
        await a.cluster.lease.step()  # publishes target 3; then a dies
        took_over: list[float] = []

        async def take_over() -> None:
            took_over.append(clock.now())

        following = asyncio.create_task(b.cluster.run(take_over))
        while not b.cluster.leading:  # a writes no more: the lease runs out
            clock.advance(RENEW)
            await b.cluster.lease.step()
        for _ in range(10):
            await asyncio.sleep(0)
        assert len(took_over) == 1 and b.cluster.lease.record.target == 3
        assert not following.done()
        # The old leader comes back and takes the lease: b stops leading.
        store = b.runtime.lease
        fields, version = await store.read()
        await store.write({**fields, "holder": "c"}, version)
        await b.cluster.lease.step()
        with pytest.raises(LeadershipLost):
            await following
        assert took_over == took_over[:1], "took over twice"

    run(go())


def test_a_write_on_a_follower_without_a_leader_answers_503_after_the_lease_time() -> None:
    async def go() -> None:
        a, b, clock = pair()
        await a.cluster.join("")  # a leader nobody can reach
        await b.cluster.join("b:5000")
        started = clock.now()
        answer = await b.cluster.relay("POST", "/add", b'{"n":1}', None)
        assert answer is not None and answer.status == 503
        assert json.loads(answer.body)["message"] == f"<Error> {contract.NO_LEADER}"
        assert clock.now() - started >= LEASE
        assert await a.cluster.relay("POST", "/add", b'{"n":1}', None) is None  # it leads

    run(go())


def test_a_new_leader_counts_ring_ids_above_every_id_it_finds() -> None:
    async def go() -> None:
        a, b, _ = await joined()
        await a.add(n=3)
        await b.cluster.sync()
        b.rs.follow(await b.runtime.adopt(), "adopted")  # what a takeover does
        await b.add("S9")
        rids = {r.name: r.rid for r, _ in b.rs.members()}
        assert rids["S9"] == max(rids.values()) and len(set(rids.values())) == 4
        assert [state for _, state in b.rs.members()] == [MemberState.SERVING] * 4

    run(go())
