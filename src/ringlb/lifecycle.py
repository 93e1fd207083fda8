"""Lifecycle support: undo steps run in reverse, and background tasks that are watched.

`Teardown` is filled as the balancer starts, one undo per resource; `close` runs them all
in reverse order even when some fail, logs every failure and returns them (as aiohttp's
cleanup contexts do). `BackgroundTasks` runs the balancer's long-lived tasks: one that
crashes is logged at ERROR the moment it happens, and when it is vital (the balancer
cannot do its job without it) `fatal` is set so that the balancer stops with an error
instead of running on half dead.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("ringlb")

Undo = Callable[[], Awaitable[Any] | None]


class Teardown:
    def __init__(self) -> None:
        self._undo: list[tuple[str, Undo]] = []

    def defer(self, what: str, undo: Undo) -> None:
        """Registers `undo`, to run at `close` before everything registered earlier."""
        self._undo.append((what, undo))

    async def close(self) -> list[str]:
        """Runs every undo, last first; returns a line for each one that failed."""
        failures = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                result = undo()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.error("stopping %s failed: %s", what, exc, exc_info=exc)
                failures.append(f"{what}: {exc}")
        return failures


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self.fatal = asyncio.Event()
        self.fatal_reason = ""

    def spawn(self, name: str, coro: Coroutine[Any, Any, None], *, vital: bool) -> None:
        """Runs `coro` until `cancel_all`; `vital`: its crash stops the balancer."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(lambda done: self._ended(done, vital))
        self._tasks.append(task)

    def _ended(self, task: asyncio.Task[None], vital: bool) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        what = "crashed" if exc is not None else "ended"
        log.error(
            "background task %s %s%s", task.get_name(), what, "" if exc else " early", exc_info=exc
        )
        if vital and not self.fatal.is_set():
            self.fatal_reason = f"background task {task.get_name()} {what}: {exc}"
            self.fatal.set()

    async def cancel_all(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
