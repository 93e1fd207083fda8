"""Health: heartbeat probes and the monitor that turns missed heartbeats into transitions.

The monitor owns the timers and only reports transitions to the ReplicaSet (down, or back
up for a replica the proxy had ejected); it never starts or stops anything itself.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiohttp

from ringlb.clock import Clock, SystemClock
from ringlb.control.membership import MemberState, ReplicaSet
from ringlb.model import Replica

log = logging.getLogger("ringlb.health")

Probe = Callable[[Replica], Awaitable[bool]]


class HeartbeatProber:
    """Answers one question: does a replica's `/heartbeat` return 200 within the timeout?"""

    def __init__(self, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._tls = tls  # replicas that speak HTTPS (upstream_tls)
        self._scheme = "http" if tls is None else "https"

    async def probe(self, replica: Replica) -> bool:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None),
                timeout=self._timeout,
            )
        url = f"{self._scheme}://{replica.host}:{replica.port}/heartbeat"
        try:
            async with self._session.get(url, ssl=self._tls or True) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HeartbeatMonitor:
    """Probes every serving or ejected replica each `interval` seconds.

    `misses` consecutive failed probes report a serving replica dead. A replica the proxy
    ejected (a hard connection failure) is probed at once: one failed probe confirms it
    dead, a good one puts it back in the ring.
    """

    def __init__(
        self,
        replicaset: ReplicaSet,
        probe: Probe,
        interval: float,
        misses: int,
        clock: Clock | None = None,
    ) -> None:
        self._replicaset = replicaset
        self._probe = probe
        self._interval = interval
        self._misses = misses
        self._clock = clock or SystemClock()
        self._missed: dict[Replica, int] = {}

    async def run(self) -> None:
        wake = self._replicaset.ejected
        while True:
            await self._clock.wait(wake, self._interval)
            wake.clear()
            await self.probe_all()

    async def probe_all(self) -> None:
        self._replicaset.readmit_outliers()
        watched = self._replicaset.members_in(
            MemberState.SERVING, MemberState.EJECTED, MemberState.OUTLIER
        )
        results = await asyncio.gather(*(self._probe(r) for r, _ in watched))
        alive = set()
        for (replica, state), ok in zip(watched, results, strict=True):
            alive.add(replica)
            if ok:
                self._missed.pop(replica, None)
                if state is MemberState.EJECTED:
                    self._replicaset.readmit(replica)
                continue
            missed = self._missed.get(replica, 0) + 1
            self._missed[replica] = missed
            if state is MemberState.EJECTED or missed >= self._misses:
                log.warning("replica %s missed %d heartbeat(s): down", replica.name, missed)
                self._replicaset.report_death(replica.name, replica)
        for gone in set(self._missed) - alive:
            del self._missed[gone]
