"""Start-up and teardown in process: undo steps run in reverse past failures, a crashed
background task is reported at once, and a vital one stops the balancer with status 1."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ringlb.app import Balancer, run_until
from ringlb.config import Settings
from ringlb.lifecycle import BackgroundTasks, Teardown
from ringlb.runtimes.fake import FakeRuntime


async def test_teardown_runs_every_undo_in_reverse_and_reports_each_failure(caplog) -> None:
    done: list[str] = []
    teardown = Teardown()

    async def fails() -> None:
        done.append("b")
        raise OSError("socket gone")

    teardown.defer("a", lambda: done.append("a"))
    teardown.defer("b", fails)
    teardown.defer("c", lambda: done.append("c"))
    teardown.defer("d", lambda: 1 / 0)
    with caplog.at_level(logging.ERROR, "ringlb"):
        failures = await teardown.close()
    assert done == ["c", "b", "a"]
    assert failures == ["d: division by zero", "b: socket gone"]
    assert [r.getMessage() for r in caplog.records] == [
        "stopping d failed: division by zero",
        "stopping b failed: socket gone",
    ]
    assert await teardown.close() == []  # each undo runs once


async def test_a_crashed_task_is_logged_at_once_and_a_vital_one_is_fatal(caplog) -> None:
    tasks = BackgroundTasks()

    async def crash() -> None:
        raise RuntimeError("bug")

    with caplog.at_level(logging.ERROR, "ringlb"):
        tasks.spawn("optional", crash(), vital=False)
        await asyncio.sleep(0.01)
        assert "background task optional crashed" in caplog.text
        assert not tasks.fatal.is_set()
        tasks.spawn("supervisor", crash(), vital=True)
        await asyncio.sleep(0.01)
    assert tasks.fatal.is_set()
    assert tasks.fatal_reason == "background task supervisor crashed: bug"
    await tasks.cancel_all()


def settings(**overrides: object) -> Settings:
    return Settings(**{"port": 0, "replicas": 0, **overrides})  # type: ignore[arg-type]


async def test_a_vital_task_that_dies_stops_the_balancer_with_status_1() -> None:
    runtime = FakeRuntime()
    balancer = Balancer(settings(), runtime)
    await balancer.start()

    async def crash() -> None:
        raise RuntimeError("bug")

    balancer.tasks.spawn("heartbeat-monitor-2", crash(), vital=True)
    assert await asyncio.wait_for(run_until(balancer, asyncio.Event()), 5) == 1
    assert balancer.listener.servers == [] and not balancer.server.is_serving()


async def test_stop_goes_on_past_a_failing_step_and_says_so() -> None:
    class ClosingRuntime(FakeRuntime):
        closed = False

        async def close(self) -> None:
            self.closed = True

    async def broken_shutdown() -> None:
        raise OSError("tables unreachable")

    runtime = ClosingRuntime()
    balancer = Balancer(settings(), runtime)
    balancer.replicaset.shutdown = broken_shutdown  # undone after the listeners, before the runtime
    await balancer.start()
    stop = asyncio.Event()
    stop.set()
    assert await run_until(balancer, stop) == 1  # the failure is reported in the status
    assert not balancer.server.is_serving()  # and everything before it was undone
    assert runtime.closed  # and everything after it too


async def test_a_failed_start_undoes_what_it_did() -> None:
    runtime = FakeRuntime()
    runtime.fail_starts(1)
    balancer = Balancer(settings(replicas=2, replica_start_timeout=0.2), runtime)
    with pytest.raises(Exception, match="failed to start"):
        await balancer.start()
    assert runtime.running == {} and balancer.tasks._tasks == []
