"""The leader lease in-process: a shared in-memory CAS store, a manual clock, balancers
stepped by hand, so every takeover time is exact."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ringlb.clock import ManualClock
from ringlb.control.lease import Lease, LeaseRecord, Role
from ringlb.runtimes import RuntimeFailure
from ringlb.runtimes.fake import MemoryLeaseStore

LEASE, RENEW = 3.0, 1.0


def balancer(name: str, store: MemoryLeaseStore, clock: ManualClock, target: int = 3) -> Lease:
    return Lease(store, name, f"{name}:5000", LEASE, RENEW, clock, lambda: (target, '{"p":1}'))


def run(coro: Coroutine[Any, Any, None]) -> None:
    return asyncio.run(coro)


def test_the_first_balancer_takes_a_free_lease_and_the_other_follows() -> None:
    async def go() -> None:
        store, clock = MemoryLeaseStore(), ManualClock()
        a, b = balancer("a", store, clock), balancer("b", store, clock)
        await a.step()
        await b.step()
        assert (a.role, b.role) == (Role.LEADER, Role.FOLLOWER)
        assert b.leader == "a" and b.leader_address == "a:5000"
        assert a.changed.is_set() and not b.changed.is_set()

    run(go())


def test_a_renewing_leader_keeps_the_lease() -> None:
    async def go() -> None:
        store, clock = MemoryLeaseStore(), ManualClock()
        a, b = balancer("a", store, clock), balancer("b", store, clock)
        await a.step()
        for _ in range(20):
            clock.advance(RENEW)
            await a.step()
            await b.step()
        assert (a.role, b.role) == (Role.LEADER, Role.FOLLOWER)
        assert LeaseRecord.parse(store.fields) == LeaseRecord("a", "a:5000", 20, 3, '{"p":1}')

    run(go())


def test_a_follower_takes_over_a_lease_left_unrenewed_for_the_lease_time() -> None:
    async def go() -> None:
        store, clock = MemoryLeaseStore(), ManualClock()
        a, b = balancer("a", store, clock, target=5), balancer("b", store, clock)
        await a.step()
        clock.advance(RENEW)
        await a.step()  # its first renewal publishes its target
        await b.step()  # b sees a's write now: the lease runs from here
        seen = clock.now()
        while b.role is Role.FOLLOWER:  # a is dead: it writes no more
            clock.advance(RENEW / 4)
            await b.step()
        assert clock.now() - seen == LEASE
        assert b.leader == "b" and b.takeovers == 1
        # What the old leader published is carried over: N stays at its target.
        assert b.record is not None and b.record.target == 5

    run(go())


def test_two_followers_racing_for_an_expired_lease_make_one_leader() -> None:
    async def go() -> None:
        store, clock = MemoryLeaseStore(), ManualClock()
        a, b, c = (balancer(n, store, clock) for n in "abc")
        await a.step()
        await b.step()
        await c.step()
        clock.advance(LEASE)
        # Both read the same version before either writes: one CAS write fails.
        await asyncio.gather(b.step(), c.step())
        assert sorted([b.role.value, c.role.value]) == ["follower", "leader"]
        await b.step()
        await c.step()
        assert b.leader == c.leader

    run(go())


class Link:
    """One balancer's way to the shared store, which can be cut."""

    def __init__(self, store: MemoryLeaseStore) -> None:
        self.store, self.cut = store, False

    async def read(self) -> tuple[dict[str, str], int]:
        self._check()
        return await self.store.read()

    async def write(self, fields: dict[str, str], version: int) -> bool:
        self._check()
        return await self.store.write(fields, version)

    def _check(self) -> None:
        if self.cut:
            raise RuntimeFailure("Docker engine error while reading the lease: unreachable")


def test_a_leader_cut_off_from_the_engine_steps_down_before_anyone_takes_over() -> None:
    async def go() -> None:
        store, clock = MemoryLeaseStore(), ManualClock()
        link = Link(store)
        a = Lease(link, "a", "a:5000", LEASE, RENEW, clock, lambda: (3, ""))
        b = balancer("b", store, clock)
        await a.step()
        await b.step()
        link.cut = True
        stepped_down = took_over = None
        while took_over is None:
            clock.advance(RENEW / 4)
            await a.step()
            await b.step()
            if stepped_down is None and a.role is Role.FOLLOWER:
                stepped_down = clock.now()
            if b.role is Role.LEADER:
                took_over = clock.now()
        assert stepped_down is not None and stepped_down <= took_over

    run(go())


def test_a_restarted_balancer_takes_back_its_own_lease_at_once() -> None:
    async def go() -> None:
        store, clock = MemoryLeaseStore(), ManualClock()
        await balancer("a", store, clock).step()
        again = balancer("a", store, clock)
        await again.step()
        assert again.role is Role.LEADER

    run(go())


def test_a_broken_record_is_free_to_take() -> None:
    assert LeaseRecord.parse({}) is None
    assert LeaseRecord.parse({"holder": "a", "renewals": "x"}) is None
    record = LeaseRecord("a", "10.0.0.2:5000", 4, None, "")
    assert LeaseRecord.parse(record.fields()) == record
