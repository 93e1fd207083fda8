"""TableBuilder: publishes a routing snapshot per membership change without stalling the loop.

A Maglev table of 65,537 entries takes 30 to 65 ms of pure Python to fill; done in one go
on the event loop, every request waits that long. So a new picker is built in slices
(`ringlb.policies.base.build_in_slices`): the first slices run at once, and when the build
takes longer than SLICE_BUDGET the rest runs in a task that yields to the loop after every
SLICE_BUDGET of work. Meanwhile the data plane routes on an interim snapshot: the last
complete picker, skipping the replicas that left since (ejected, dead, retiring), so a
replica that failed gets no traffic while its successor table builds; a replica that joined
gets traffic once the table that holds it is complete (`settled()` waits for that).

A newer change supersedes a build in progress (its result would be stale). The tables are
the same as a one-shot build's: slicing changes when work runs, never what it computes.
A table can also be built elsewhere (`rebuild(..., elsewhere=True)`, then `adopt`): a
worker of `--workers N` routes on the interim snapshot until the table its control process
built arrives (see `ringlb.policies.base.table_to_share`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Container, Sequence

from ringlb.model import Picker, Replica, Snapshot
from ringlb.policies import Policy
from ringlb.policies.base import BuildSteps, build_in_slices

log = logging.getLogger("ringlb.tables")

# Longest run of table building between two turns of the event loop (s). A slice of work
# overshoots it by at most one slice (under a millisecond here), so a request waits at most
# about 3 ms for a rebuild (issue 14: at most 5 ms). Not less: under load each turn also
# serves the ready requests, and the build's share of the loop sets how soon a joining
# replica gets traffic (1 ms a turn took 200 ms for a Maglev table under wrk).
SLICE_BUDGET = 0.002


class SkipLeavers:
    """The last complete picker, skipping replicas that left the ring since it was built."""

    __slots__ = ("_gone", "_picker")

    def __init__(self, picker: Picker, gone: frozenset[Replica]) -> None:
        self._picker = picker
        self._gone = gone

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        return self._picker.pick(key, _Either(self._gone, exclude) if exclude else self._gone)


class _Either:
    """A container holding what either of two containers holds."""

    __slots__ = ("_first", "_second")

    def __init__(self, first: Container[Replica], second: Container[Replica]) -> None:
        self._first = first
        self._second = second

    def __contains__(self, item: object) -> bool:
        return item in self._first or item in self._second


class TableBuilder:
    """Builds each new snapshot's picker in slices and hands every snapshot it publishes
    (interim or complete) to `publish`."""

    def __init__(self, policy: Policy, publish: Callable[[Snapshot], None]) -> None:
        self._publish = publish
        self._complete = Snapshot(0, (), policy.build(()), policy.keyed)
        self._task: asyncio.Task[None] | None = None
        # The build in progress: (version, serving, keyed) of the snapshot it will publish.
        self._building: tuple[int, tuple[Replica, ...], bool] | None = None
        self.complete = asyncio.Event()  # set while the published snapshot is complete
        self.complete.set()
        self.builds_sliced = 0  # builds that had to finish in a task (for tests and figures)
        # The most CPU time (s, of this thread: a preemption by the OS is not counted) one
        # turn of the event loop spent building: the stall a rebuild adds (bench/stall.py).
        self.longest_turn = 0.0
        # Called with each complete snapshot once published (a control process shares tables).
        self.on_complete: list[Callable[[Snapshot], None]] = []
        publish(self._complete)

    def rebuild(
        self, version: int, serving: Sequence[Replica], policy: Policy, elsewhere: bool = False
    ) -> None:
        """Publishes the snapshot `version` of `serving` under `policy`: at once when its
        picker builds within SLICE_BUDGET, else an interim one now and the complete one
        when the build ends. `elsewhere`: the picker is built elsewhere and handed to
        `adopt`; until then the interim one is published."""
        self._cancel()
        serving = tuple(serving)
        if elsewhere:
            self.complete.clear()
            self._publish(self._interim(version, serving))
            self._building = (version, serving, policy.keyed)
            return
        steps = build_in_slices(policy, serving)
        picker = self._run_slices(steps)
        if picker is not None:
            self._finish(Snapshot(version, serving, picker, policy.keyed))
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to yield to (a synchronous caller): build at once
            picker = self._run_slices(steps, float("inf"))
            assert picker is not None
            self._finish(Snapshot(version, serving, picker, policy.keyed))
            return
        self.complete.clear()
        self.builds_sliced += 1
        self._publish(self._interim(version, serving))
        self._building = (version, serving, policy.keyed)
        self._task = loop.create_task(self._build(steps, version, serving, policy.keyed))

    def adopt(self, version: int, picker: Picker) -> bool:
        """Completes snapshot `version` with `picker`, made elsewhere (the picker its build
        returns); returns whether `version` was waiting for it (else nothing changes)."""
        if self._building is None or self._building[0] != version:
            return False
        _, serving, keyed = self._building
        self._cancel()
        self._finish(Snapshot(version, serving, picker, keyed))
        return True

    def _interim(self, version: int, serving: tuple[Replica, ...]) -> Snapshot:
        """Returns the last complete snapshot without the replicas that are not serving."""
        complete = self._complete
        still = set(serving)
        gone = frozenset(r for r in complete.replicas if r not in still)
        if not gone:
            return Snapshot(version, complete.replicas, complete.picker, complete.keyed)
        kept = tuple(r for r in complete.replicas if r in still)
        return Snapshot(version, kept, SkipLeavers(complete.picker, gone), complete.keyed)

    async def _build(
        self, steps: BuildSteps, version: int, serving: tuple[Replica, ...], keyed: bool
    ) -> None:
        try:
            while (picker := self._run_slices(steps)) is None:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("building the routing table of version %d failed", version)
            self._task = self._building = None
            self.complete.set()  # waiters go on with the interim table rather than hang
            return
        self._task = None
        self._finish(Snapshot(version, serving, picker, keyed))

    def _finish(self, snapshot: Snapshot) -> None:
        self._building = None
        self._complete = snapshot
        self._publish(snapshot)
        self.complete.set()
        for callback in self.on_complete:
            callback(snapshot)

    def _run_slices(self, steps: BuildSteps, budget: float | None = None) -> Picker | None:
        """Runs slices of `steps` for `budget` seconds (SLICE_BUDGET by default); returns the
        picker if the build ended."""
        began = time.thread_time()
        deadline = time.perf_counter() + (SLICE_BUDGET if budget is None else budget)
        try:
            while True:
                next(steps)
                if time.perf_counter() >= deadline:
                    return None
        except StopIteration as done:
            return done.value
        finally:
            self.longest_turn = max(self.longest_turn, time.thread_time() - began)

    async def settled(self) -> None:
        """Returns once the published snapshot is complete (it holds every change so far)."""
        await self.complete.wait()

    def _cancel(self) -> None:
        self._building = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def close(self) -> None:
        """Stops a build in progress."""
        self._cancel()
