"""Time, injected: the control plane asks a `Clock` instead of the time module, so tests
can run back-offs, timeouts and drains exactly and at once with a `ManualClock`."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Returns monotonic seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Waits until `event` is set or `timeout` seconds pass; returns whether it is set."""
        ...


class SystemClock:
    """The machine's monotonic clock and the event loop's timers."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return event.is_set()


class ManualClock:
    """A clock for tests: time moves only when something sleeps or waits, and then at once
    by the whole amount, so nothing really waits. `sleeps` records every sleep asked for."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += max(0.0, seconds)
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        await asyncio.sleep(0)
        if not event.is_set():
            self.time += timeout
        return event.is_set()
