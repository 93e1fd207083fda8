"""The control plane in process: membership, health thresholds, outliers and respawn
back-off, with the shipped fake runtime and a manual clock (exact, nothing sleeps)."""

from __future__ import annotations

import asyncio

import pytest

from control_rig import Rig
from ringlb.clock import ManualClock
from ringlb.contract import ContractError, MembershipRequest
from ringlb.control.health import HeartbeatMonitor
from ringlb.control.membership import MemberState
from ringlb.control.outliers import OutlierRules
from ringlb.control.supervisor import Backoff, Supervisor


async def test_add_admits_replicas_together_in_order() -> None:
    rig = Rig()
    assert await rig.add("a", "b", "c") == ["a", "b", "c"]
    assert rig.rs.snapshot.names() == ["a", "b", "c"]
    assert rig.rs.target == 3


async def test_add_is_all_or_nothing() -> None:
    rig = Rig()
    rig.runtime.fail_start("b", "image missing")
    with pytest.raises(ContractError) as failed:
        await rig.add("a", "b", "c")
    assert failed.value.status == 500
    assert (
        failed.value.text == "Replica 'b' failed to start: cannot start replica 'b': image missing"
    )
    assert rig.rs.names() == [] and rig.runtime.running == {}
    assert {name for name, _ in rig.runtime.stopped} == {"a", "b", "c"}
    assert rig.rs.target == 0


async def test_a_replica_that_never_answers_fails_its_start_after_the_timeout() -> None:
    rig = Rig(start_timeout=3.0)
    rig.down.add("mute")
    with pytest.raises(ContractError) as failed:
        await rig.add("mute")
    assert failed.value.text == "Replica 'mute' failed to start: no heartbeat within 3 s"
    assert sum(rig.clock.sleeps) == pytest.approx(3.0, abs=0.06)


async def test_an_ejected_replica_comes_back_on_a_good_heartbeat() -> None:
    rig = Rig()
    await rig.add("a", "b")
    monitor = HeartbeatMonitor(rig.rs, rig.probe, 1.0, 2, rig.clock)
    rig.rs.eject(rig.replica("a"))
    assert rig.rs.snapshot.names() == ["b"] and rig.rs.ejected.is_set()
    await monitor.probe_all()
    assert rig.rs.snapshot.names() == ["a", "b"]
    assert rig.rs.ejections == 1 and rig.rs.deaths == 0


async def test_an_ejected_replica_that_misses_one_heartbeat_is_down() -> None:
    rig = Rig()
    await rig.add("a", "b")
    monitor = HeartbeatMonitor(rig.rs, rig.probe, 1.0, 2, rig.clock)
    rig.rs.eject(rig.replica("a"))
    rig.down.add("a")
    await monitor.probe_all()
    assert rig.state("a") is MemberState.DOWN
    assert rig.rs.dead.get_nowait() == "a"


async def test_a_serving_replica_is_down_after_misses_in_a_row_only() -> None:
    rig = Rig()
    await rig.add("a", "b")
    monitor = HeartbeatMonitor(rig.rs, rig.probe, 1.0, 3, rig.clock)
    rig.down.add("a")
    await monitor.probe_all()
    await monitor.probe_all()
    assert rig.state("a") is MemberState.SERVING  # 2 misses of 3
    rig.down.clear()
    await monitor.probe_all()  # a good one resets the count
    rig.down.add("a")
    await monitor.probe_all()
    await monitor.probe_all()
    assert rig.state("a") is MemberState.SERVING
    await monitor.probe_all()
    assert rig.state("a") is MemberState.DOWN


async def test_outliers_are_ejected_for_doubling_periods_then_replaced() -> None:
    rig = Rig(OutlierRules(consecutive_errors=3, ejection_time=10.0, max_ejections=2))
    await rig.add("a", "b")
    monitor = HeartbeatMonitor(rig.rs, rig.probe, 1.0, 2, rig.clock)
    a = rig.replica("a")
    for _ in range(2):
        rig.rs.report_error(a)
    assert rig.state("a") is MemberState.SERVING
    rig.rs.report_error(a)
    assert rig.state("a") is MemberState.OUTLIER and rig.rs.snapshot.names() == ["b"]
    rig.clock.advance(9.9)
    await monitor.probe_all()
    assert rig.state("a") is MemberState.OUTLIER
    rig.clock.advance(0.2)
    await monitor.probe_all()
    assert rig.state("a") is MemberState.SERVING
    for _ in range(3):
        rig.rs.report_error(a)
    assert rig.state("a") is MemberState.OUTLIER
    rig.clock.advance(19.9)  # the second ejection lasts twice as long
    await monitor.probe_all()
    assert rig.state("a") is MemberState.OUTLIER
    rig.clock.advance(0.2)
    await monitor.probe_all()
    assert rig.state("a") is MemberState.SERVING
    for _ in range(3):
        rig.rs.report_error(a)
    assert rig.state("a") is MemberState.DOWN  # a third time: replaced instead
    assert rig.rs.dead.get_nowait() == "a"


async def test_the_last_serving_replica_is_never_an_outlier() -> None:
    rig = Rig(OutlierRules(1, 10.0, 3))
    await rig.add("only")
    for _ in range(5):
        rig.rs.report_error(rig.replica("only"))
    assert rig.rs.snapshot.names() == ["only"]


async def test_outlier_detection_off_ejects_nothing() -> None:
    rig = Rig(OutlierRules(0, 10.0, 3))
    await rig.add("a", "b")
    for _ in range(50):
        rig.rs.report_error(rig.replica("a"))
    assert rig.rs.snapshot.names() == ["a", "b"]


async def test_remove_drains_then_stops_and_target_follows() -> None:
    rig = Rig()
    await rig.add("a", "b", "c")
    rig.replica("b").inflight = 1  # a request in flight: /rm waits up to drain_timeout
    names = await rig.rs.remove(MembershipRequest(n=1, hostnames=("b",)))
    assert names == ["a", "c"] and ("b", False) in rig.runtime.stopped
    assert sum(rig.clock.sleeps) == pytest.approx(1.0, abs=0.02)
    assert rig.rs.target == 2


def backoff(clock: ManualClock) -> Backoff:
    return Backoff(0.2, 1.0, 5.0, clock)


async def test_a_dead_replica_is_replaced_up_to_the_target_and_no_further() -> None:
    rig = Rig()
    await rig.add("a", "b", "c")
    await rig.rs.remove(MembershipRequest(n=1, hostnames=("c",)))
    supervisor = Supervisor(rig.rs, backoff(rig.clock), rig.clock)
    task = asyncio.create_task(supervisor.run())
    try:
        rig.runtime.kill("a")
        rig.rs.report_death("a")
        for _ in range(20):
            await asyncio.sleep(0)
        names = rig.rs.snapshot.names()
        assert len(names) == 2 and "a" not in names and "b" in names
        assert await supervisor.reconcile() == []  # at the target: nothing more starts
        assert supervisor.respawns == 1
    finally:
        task.cancel()


async def test_respawns_that_keep_failing_back_off_exponentially_to_the_cap() -> None:
    rig = Rig()
    await rig.add("a")
    supervisor = Supervisor(rig.rs, backoff(rig.clock), rig.clock)
    rig.rs.target = 2
    rig.runtime.fail_starts(5)
    started = await supervisor.reconcile()
    assert len(started) == 1 and rig.rs.snapshot.names() == ["a", started[0]]
    assert rig.clock.sleeps == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert supervisor.backoff.failures == 5


async def test_a_replacement_that_dies_soon_counts_as_a_failed_respawn() -> None:
    clock = ManualClock()
    policy = backoff(clock)
    policy.joined("x")
    clock.advance(1.0)
    policy.died("x")
    assert policy.failures == 1 and policy.delay() == 0.2
    policy.joined("y")
    clock.advance(6.0)
    policy.died("y")
    assert policy.failures == 0 and policy.delay() == 0.0
