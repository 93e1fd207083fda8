"""Supervisor: keeps the replica count at its target by replacing the dead.

It consumes the ReplicaSet's `dead` queue: deletes the dead replica, then starts
replacements under fresh generated names until the count is back at the target. A new
replica joins the ring only after its first good heartbeat (ReplicaSet.spawn).
"""

from __future__ import annotations

import asyncio
import logging
import time

from ringlb.replicaset import ReplicaSet, SpawnError

log = logging.getLogger("ringlb.supervisor")

RETRY_DELAY = 1.0


class Supervisor:
    def __init__(self, replicaset: ReplicaSet, retry_delay: float = RETRY_DELAY) -> None:
        self._replicaset = replicaset
        self._retry_delay = retry_delay
        self.respawns = 0

    async def run(self) -> None:
        rs = self._replicaset
        while True:
            name = await rs.dead.get()
            started = time.monotonic()
            async with rs.lock:
                await rs.delete([name])
            replaced = await self.reconcile()
            if replaced:
                log.info(
                    "replaced %s with %s in %.2f s",
                    name,
                    ", ".join(replaced),
                    time.monotonic() - started,
                )

    async def reconcile(self) -> list[str]:
        """Starts replicas until the target is met; returns their names.

        Takes the lock for one start at a time, so /add and /rm are never shut out for
        long, and waits between failed starts instead of looping tightly.
        """
        rs = self._replicaset
        started: list[str] = []
        while True:
            async with rs.lock:
                if rs.missing() <= 0:
                    return started
                name = rs.generate_name()
                try:
                    await rs.spawn([name])
                except SpawnError as exc:
                    error: SpawnError | None = exc
                else:
                    error = None
                    started.append(name)
                    self.respawns += 1
            if error is not None:
                log.error("respawn failed: %s; retrying in %.1f s", error, self._retry_delay)
                await asyncio.sleep(self._retry_delay)
