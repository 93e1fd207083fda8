"""Child processes (replicas, workers) started without holding up the event loop.

uvloop starts a subprocess with libuv's `uv_spawn`, which forks the whole balancer and then
blocks until the child has called exec: 6 to 7 ms of a ~80 MiB balancer on this machine's
hosts, during which no request moves (an `/add` under load stalled the loop longer than a
table rebuild may, issue 14). `subprocess.Popen` uses vfork where it can: the parent waits
only for the exec, well under a millisecond. The exit is then awaited through a pidfd
(Linux 5.3+) on the event loop, with no thread and no SIGCHLD handler; where there is no
pidfd (not Linux), a thread waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence


class Child:
    """A started child process: its pid, its exit status once it has exited (`returncode`,
    negative for a signal, as `subprocess` has it) and a way to wait for that."""

    __slots__ = ("_exited", "_popen", "pid")

    def __init__(self, popen: subprocess.Popen, loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self.pid = popen.pid
        self._exited: asyncio.Future[int] = loop.create_future()
        try:
            pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            threading.Thread(target=self._wait_in_thread, args=(loop,), daemon=True).start()
        else:
            loop.add_reader(pidfd, self._reap, loop, pidfd)

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    def _reap(self, loop: asyncio.AbstractEventLoop, pidfd: int) -> None:
        # Readable: the child has exited, so this wait returns at once.
        loop.remove_reader(pidfd)
        os.close(pidfd)
        self._exited.set_result(self._popen.wait())

    def _wait_in_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        code = self._popen.wait()
        # A loop closed meanwhile has nobody left to tell.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._exited.set_result, code)

    async def wait(self) -> int:
        """Returns the exit status once the child has exited."""
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        """Sends `sig`, unless the child was already reaped (a pid that is no longer ours)."""
        if not self._exited.done():
            self._popen.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    quiet: bool = False,
    new_session: bool = False,
    pass_fds: Sequence[int] = (),
) -> Child:
    """Starts `args`; raises OSError when it cannot. `quiet`: stdin and stdout on /dev/null
    (stderr is always the balancer's). `new_session`: its own session and process group, so
    a Ctrl-C in the terminal does not reach it."""
    loop = asyncio.get_running_loop()
    devnull = subprocess.DEVNULL if quiet else None
    popen = subprocess.Popen(
        list(args),
        stdin=devnull,
        stdout=devnull,
        env=dict(env),
        start_new_session=new_session,
        pass_fds=tuple(pass_fds),
    )
    return Child(popen, loop)
