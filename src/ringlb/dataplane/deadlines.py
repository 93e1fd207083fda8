"""The data plane's timers: one sweep every `tick` instead of a timer per request.

Client connections carry one deadline each (see `ringlb.dataplane.connection`); exchanges
with a replica time out after `upstream_timeout` seconds of the replica's silence (time
spent waiting on the client does not count). Deadlines are enforced to within a tick. An
exception in one expiry is logged and the sweep goes on: a sweep that died would leave
every deadline unenforced. After many client connections have closed, the sweep also
hands the memory they used back to the system (`ringlb.memory`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from ringlb.memory import give_back_memory

log = logging.getLogger("ringlb.proxy")

# Closed client connections (since the last trim) that make the heap worth trimming, and
# the least time between two trims (s).
TRIM_AFTER_CLOSED = 256
TRIM_INTERVAL = 5.0


class HasDeadline(Protocol):
    deadline: float  # 0: none

    def expired(self) -> None: ...


class Exchange(Protocol):
    def silent_since(self, now: float, timeout: float) -> bool: ...

    def time_out(self, timeout: float) -> None: ...


class DeadlineSweep:
    """Expires client deadlines and silent exchanges; `now` is its coarse clock, which the
    connections read to set their deadlines."""

    def __init__(
        self,
        clients: set[HasDeadline],
        exchanges: set[Exchange],
        upstream_timeout: float,
        tick: float,
    ) -> None:
        self._clients = clients
        self._exchanges = exchanges
        self.upstream_timeout = upstream_timeout
        self.tick = tick
        # The event loop's clock (monotonic), which the upstream connections read too.
        self.now = time.monotonic()
        self._most_clients = 0  # since the last trim
        self._trimmed_at = self.now

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.sweep(loop.time())
            await asyncio.sleep(self.tick)

    def sweep(self, now: float) -> None:
        """Expires everything due at `now`."""
        self.now = now
        for client in [c for c in self._clients if 0.0 < c.deadline <= now]:
            try:
                client.expired()
            except Exception:
                log.exception("a client deadline failed to expire")
        timeout = self.upstream_timeout
        for exchange in [e for e in self._exchanges if e.silent_since(now, timeout)]:
            try:
                exchange.time_out(timeout)
            except Exception:
                log.exception("an upstream timeout failed to expire")
        clients = len(self._clients)
        self._most_clients = max(self._most_clients, clients)
        closed = self._most_clients - clients
        if closed >= TRIM_AFTER_CLOSED and now - self._trimmed_at >= TRIM_INTERVAL:
            give_back_memory()
            self._most_clients, self._trimmed_at = clients, now
