"""Child processes (ringlb.children): real processes, on the default asyncio loop and on
uvloop, awaited through their pidfd or, where there is none, a thread."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine

import pytest
import uvloop

from ringlb import children
from ringlb.children import spawn

PYTHON = sys.executable


Run = Callable[[Coroutine[None, None, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request) -> Run:
    """Runs a test's coroutine on a loop of its own: ringlb runs on uvloop, and the pidfd
    reader must work on asyncio's loop as well."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coroutine: Coroutine[None, None, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(coroutine)

    return run


@pytest.fixture(params=["pidfd", "thread"])
def waiting(request, monkeypatch) -> str:
    if request.param == "thread":

        def no_pidfd(pid: int) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(children.os, "pidfd_open", no_pidfd)
    return request.param


def test_the_exit_status_is_the_childs(run: Run, waiting: str) -> None:
    async def scenario() -> None:
        child = spawn([PYTHON, "-c", "import sys; sys.exit(3)"], env=os.environ)
        assert child.pid > 0
        assert await asyncio.wait_for(child.wait(), 10) == 3
        assert child.returncode == 3
        assert await child.wait() == 3  # and again, at once

    run(scenario())


def test_a_signal_shows_as_a_negative_status_and_every_waiter_sees_it(
    run: Run, waiting: str
) -> None:
    async def scenario() -> None:
        child = spawn([PYTHON, "-c", "import time; time.sleep(60)"], env=os.environ)
        waiters = [asyncio.ensure_future(child.wait()) for _ in range(3)]
        await asyncio.sleep(0.2)
        assert child.returncode is None and not any(w.done() for w in waiters)
        child.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(asyncio.gather(*waiters), 10) == [-signal.SIGTERM] * 3
        child.kill()  # reaped: no signal goes to a pid that may be someone else's now
        assert child.returncode == -signal.SIGTERM

    run(scenario())


def test_a_wait_given_up_leaves_the_child_watched(run: Run, waiting: str) -> None:
    async def scenario() -> None:
        child = spawn([PYTHON, "-c", "import time; time.sleep(60)"], env=os.environ)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(child.wait(), 0.1)
        child.kill()
        assert await asyncio.wait_for(child.wait(), 10) == -signal.SIGKILL

    run(scenario())


def test_quiet_new_session_children_with_passed_descriptors(run: Run, waiting: str, capfd) -> None:
    async def scenario() -> None:
        ours, theirs = os.pipe()
        script = (
            "import os, sys; print('not to the terminal');"
            f"os.write({theirs}, f'{{os.getsid(0)}} {{sys.stdin.read()!r}}'.encode())"
        )
        try:
            child = spawn(
                [PYTHON, "-c", script],
                env={**os.environ, "MARK": "1"},
                quiet=True,
                new_session=True,
                pass_fds=(theirs,),
            )
        finally:
            os.close(theirs)
        assert await asyncio.wait_for(child.wait(), 10) == 0
        with os.fdopen(ours, "rb") as pipe:
            sid, stdin = pipe.read().decode().split()
        assert int(sid) == child.pid  # its own session, so a terminal's Ctrl-C misses it
        assert stdin == "''"  # stdin was /dev/null
        assert "not to the terminal" not in capfd.readouterr().out

    run(scenario())


def test_a_program_that_cannot_start_raises_at_once(run: Run) -> None:
    async def scenario() -> None:
        with pytest.raises(OSError):
            spawn(["/nonexistent/ringlb-replica"], env=os.environ)

    run(scenario())
