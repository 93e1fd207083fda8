"""`fake` runtime: replicas that exist only in memory, shipped for in-process tests.

Starting one records it and returns an address nothing listens on (the test's probe
decides whether it "answers"); `kill(name)` makes it die on its own, as a crash would, and
`fail_start(name, reason)` makes its next start fail (`fail_starts(n)`: the next n starts,
whatever the name). Every start and stop is recorded. With a lease store, several balancers
share the replicas: `beside()` is another balancer's runtime on the same ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ringlb.runtimes.base import RunningReplica, Runtime, RuntimeFailure


class FakeRuntime(Runtime):
    name = "fake"

    def __init__(
        self,
        adopted: list[RunningReplica] | None = None,
        lease: MemoryLeaseStore | None = None,
    ) -> None:
        self.running: dict[str, RunningReplica] = {r.name: r for r in adopted or []}
        self.lease = lease
        self.started: list[str] = []
        self.stopped: list[tuple[str, bool]] = []  # (name, force)
        self._failing: dict[str, str] = {}
        self._failing_any = 0
        self._deaths: asyncio.Queue[str] = asyncio.Queue()
        self._next_port = 20000

    def beside(self) -> FakeRuntime:
        """Returns the runtime of another balancer on the same replicas and lease."""
        other = FakeRuntime(lease=self.lease)
        other.running = self.running
        return other

    def fail_start(self, name: str, reason: str = "no such image") -> None:
        """Makes the next start of `name` fail with `reason`."""
        self._failing[name] = reason

    def fail_starts(self, count: int) -> None:
        """Makes the next `count` starts fail, whatever their names."""
        self._failing_any = count

    def kill(self, name: str) -> None:
        """`name` dies on its own: it stops running and `deaths()` reports it."""
        if self.running.pop(name, None) is not None:
            self._deaths.put_nowait(name)

    async def start(self, name: str, rid: int) -> RunningReplica:
        self.started.append(name)
        if name in self._failing:
            raise RuntimeFailure(f"cannot start replica '{name}': {self._failing.pop(name)}")
        if self._failing_any:
            self._failing_any -= 1
            raise RuntimeFailure(f"cannot start replica '{name}': no such image")
        if name in self.running:
            raise RuntimeFailure(f"replica '{name}' is already running")
        self._next_port += 1
        replica = RunningReplica(name=name, rid=rid, host="127.0.0.1", port=self._next_port)
        self.running[name] = replica
        return replica

    async def stop(self, name: str, force: bool = False) -> None:
        self.stopped.append((name, force))
        self.running.pop(name, None)

    async def adopt(self) -> list[RunningReplica]:
        return await self.listing()

    async def listing(self) -> list[RunningReplica]:
        return sorted(self.running.values(), key=lambda r: r.rid)

    def lease_store(self) -> MemoryLeaseStore | None:
        return self.lease

    async def deaths(self) -> AsyncIterator[str]:
        while True:
            yield await self._deaths.get()


class MemoryLeaseStore:
    """A compare-and-swap register in memory (the lease store of in-process tests): a
    write carrying a stale version fails, as a Swarm object's update does. `unreachable`
    makes every call fail like an engine that does not answer."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.version = 0
        self.unreachable = False
        self.writes = 0

    async def read(self) -> tuple[dict[str, str], int]:
        self._check()
        return dict(self.fields), self.version

    async def write(self, fields: dict[str, str], version: int) -> bool:
        self._check()
        if version != self.version:
            return False
        self.fields, self.version = dict(fields), self.version + 1
        self.writes += 1
        return True

    def _check(self) -> None:
        if self.unreachable:
            raise RuntimeFailure("Docker engine error while reading the lease: unreachable")
