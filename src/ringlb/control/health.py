"""Health: heartbeat probes and the monitor that turns missed heartbeats into transitions.

The monitor owns the timers and only reports transitions to the ReplicaSet (down, or back
up for a replica the proxy had ejected); it never starts or stops anything itself.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import httptools

from ringlb.clock import Clock, SystemClock
from ringlb.control.membership import MemberState, ReplicaSet
from ringlb.model import Replica

log = logging.getLogger("ringlb.health")

Probe = Callable[[Replica], Awaitable[bool]]

# A heartbeat's answer is a status line and a few header lines: more is not a heartbeat.
MAX_ANSWER = 64 * 1024


class HeartbeatProber:
    """Answers one question: does a replica's `/heartbeat` return 200 within the timeout?

    One short connection per probe (`Connection: close`), read to the answer's end (a
    replica that keeps the connection open anyway is fine) and closed. Written on
    asyncio's streams and httptools rather than an HTTP client library: the question is
    one status line, and a client library (aiohttp and its dependencies) would be about
    10 MiB of the balancer's memory for it.
    """

    def __init__(self, timeout: float, tls: ssl.SSLContext | None = None) -> None:
        self._timeout = timeout
        self._tls = tls  # replicas that speak HTTPS (upstream_tls)

    async def probe(self, replica: Replica) -> bool:
        host = f"[{replica.host}]" if ":" in replica.host else replica.host  # IPv6
        request = (
            f"GET /heartbeat HTTP/1.1\r\nHost: {host}:{replica.port}\r\nConnection: close\r\n\r\n"
        ).encode("latin-1")
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await asyncio.open_connection(
                    replica.host,
                    replica.port,
                    ssl=self._tls,
                    server_hostname=replica.host if self._tls is not None else None,
                )
                try:
                    writer.write(request)
                    return await _status(reader) == 200
                finally:
                    writer.close()
        except (OSError, TimeoutError, httptools.HttpParserError):  # SSLError is an OSError
            return False


class _Answer:
    """What the parser tells of one answer: whether its head, and the whole of it, came."""

    def __init__(self) -> None:
        self.head = False
        self.ended = False

    def on_headers_complete(self) -> None:
        self.head = True

    def on_message_complete(self) -> None:
        self.ended = True


async def _status(reader: asyncio.StreamReader) -> int | None:
    """Reads one answer to its end (or the connection's) and returns its status code;
    None when the connection ended before a whole head."""
    answer, read = _Answer(), 0
    parser = httptools.HttpResponseParser(answer)
    while not answer.ended:
        piece = await reader.read(MAX_ANSWER)
        if not piece:
            break
        read += len(piece)
        if read > MAX_ANSWER:
            raise httptools.HttpParserError("answer too long for a heartbeat")
        parser.feed_data(piece)
    return parser.get_status_code() if answer.head else None


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
