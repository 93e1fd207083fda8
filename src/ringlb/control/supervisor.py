"""Supervisor: keeps the replica count at its target by replacing the dead.

It consumes the ReplicaSet's `dead` queue: deletes the dead replica, then starts
replacements under fresh generated names until the count is back at the target. A new
replica joins the ring only after its first good heartbeat (ReplicaSet.spawn).
"""

from __future__ import annotations

import logging

from ringlb.clock import Clock, SystemClock
from ringlb.control.membership import ReplicaSet, SpawnError

log = logging.getLogger("ringlb.supervisor")


class Backoff:
    """Exponential delays between respawns that keep failing: `base`, 2 x `base`, ... up
    to `cap`. A failure is a start that fails, or a replacement that dies within
    `stable_after` seconds of joining (a crash loop); a replacement that lives longer
    resets the count."""

    def __init__(self, base: float, cap: float, stable_after: float, clock: Clock) -> None:
        self.base, self.cap, self.stable_after = base, cap, stable_after
        self.failures = 0
        self._clock = clock
        self._joined: dict[str, float] = {}

    def joined(self, name: str) -> None:
        self._joined[name] = self._clock.now()

    def died(self, name: str) -> None:
        joined = self._joined.pop(name, None)
        if joined is None:
            return  # not one of our replacements (an initial or /add replica)
        if self._clock.now() - joined < self.stable_after:
            self.failures += 1
        else:
            self.failures = 0

    def failed(self) -> None:
        self.failures += 1

    def delay(self) -> float:
        """Returns how long to wait before the next start (0 when nothing failed)."""
        if not self.failures:
            return 0.0
        return min(self.cap, self.base * 2 ** (self.failures - 1))


class Supervisor:
    def __init__(
        self, replicaset: ReplicaSet, backoff: Backoff, clock: Clock | None = None
    ) -> None:
        self._replicaset = replicaset
        self.backoff = backoff
        self._clock = clock or SystemClock()
        self.respawns = 0

    async def run(self) -> None:
        rs = self._replicaset
        while True:
            name = await rs.dead.get()
            started = self._clock.now()
            self.backoff.died(name)
            async with rs.lock:
                await rs.delete([name])
            replaced = await self.reconcile()
            for new in replaced:
                rs.record_event("respawned", new, f"replaces {name}")
            if replaced:
                log.info(
                    "replaced %s with %s in %.2f s",
                    name,
                    ", ".join(replaced),
                    self._clock.now() - started,
                )

    async def reconcile(self) -> list[str]:
        """Starts replicas until the target is met; returns their names.

        Takes the lock for one start at a time, so /add and /rm are never shut out for
        long, and waits (exponentially longer) while starts keep failing, never looping
        tightly on a replica that cannot live.
        """
        rs = self._replicaset
        started: list[str] = []
        while True:
            delay = self.backoff.delay()
            if delay and rs.missing() > 0:
                log.warning(
                    "respawn backing off: %d failure(s) in a row; next start in %.1f s",
                    self.backoff.failures,
                    delay,
                )
                await self._clock.sleep(delay)
            async with rs.lock:
                if rs.missing() <= 0:
                    return started
                name = rs.generate_name()
                try:
                    await rs.spawn([name])
                except SpawnError as exc:
                    log.error("respawn failed: %s", exc)
                    self.backoff.failed()
                    continue
                started.append(name)
                self.respawns += 1
                self.backoff.joined(name)
