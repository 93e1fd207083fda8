"""`process` runtime: each replica is a child process on a free loopback port.

Children arm the parent-death signal (see `lifeline.py`), so none outlives the balancer,
even when it is killed with SIGKILL. Exits nobody asked for are reported by `deaths()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ringlb.children import Child, spawn
from ringlb.replica.lifeline import PARENT_PID_ENV
from ringlb.runtimes.base import RunningReplica, Runtime, RuntimeFailure

log = logging.getLogger("ringlb.runtime.process")

STOP_GRACE = 2.0
DEFAULT_COMMAND = "{python} -m ringlb replica --id {name} --host {host} --port {port}"


@dataclass(frozen=True, slots=True)
class ReplicaProcess:
    """A replica process as /proc shows it."""

    name: str
    pid: int
    port: int | None


def find_replica_processes(balancer_pid: int | None = None) -> list[ReplicaProcess]:
    """Returns the live `ringlb replica` processes on this machine, sorted by name; only
    those the balancer `balancer_pid` started (its mark in their environment) when given.

    For operators and tools (tests, benchmarks, analysis) that need a replica's pid."""
    mark = f"{PARENT_PID_ENV}={balancer_pid}\x00".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\x00")
            if b"replica" not in args or b"--id" not in args:
                continue
            if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie is dead, whatever its parent has not yet reaped
            if balancer_pid is not None and mark not in (proc / "environ").read_bytes():
                continue
        except OSError:
            continue  # gone meanwhile, or not ours to read
        name = args[args.index(b"--id") + 1].decode()
        port = None
        if b"--port" in args and args[args.index(b"--port") + 1].isdigit():
            port = int(args[args.index(b"--port") + 1])
        found.append(ReplicaProcess(name, int(proc.name), port))
    return sorted(found, key=lambda p: p.name)


def free_loopback_port(host: str = "127.0.0.1") -> int:
    """Returns a port that was free on `host` a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ProcessRuntime(Runtime):
    name = "process"

    def __init__(self, host: str = "127.0.0.1", command: str | None = None) -> None:
        self._host = host
        self._command = command or DEFAULT_COMMAND
        self._children: dict[str, Child] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._deaths: asyncio.Queue[str] = asyncio.Queue()

    def pid_of(self, name: str) -> int | None:
        proc = self._children.get(name)
        return proc.pid if proc else None

    async def start(self, name: str, rid: int) -> RunningReplica:
        if name in self._children:
            raise RuntimeFailure(f"replica process '{name}' is already running")
        port = free_loopback_port(self._host)
        cmd = [
            part.format(python=sys.executable, name=name, host=self._host, port=port)
            for part in shlex.split(self._command)
        ]
        env = dict(os.environ, **{PARENT_PID_ENV: str(os.getpid())})
        try:
            # Own process group: a Ctrl-C in the terminal reaches the balancer only, which
            # then stops its replicas in order.
            proc = spawn(cmd, env=env, quiet=True, new_session=True)
        except OSError as exc:
            raise RuntimeFailure(f"cannot start replica process '{name}': {exc}") from exc
        self._children[name] = proc
        self._watchers[name] = asyncio.create_task(self._watch(name, proc))
        log.info("started replica %s pid=%d port=%d", name, proc.pid, port)
        return RunningReplica(name=name, rid=rid, host=self._host, port=port)

    async def _watch(self, name: str, proc: Child) -> None:
        code = await proc.wait()
        if self._children.get(name) is proc:
            del self._children[name]
            self._watchers.pop(name, None)
            log.warning("replica %s (pid %d) exited with %s", name, proc.pid, code)
            self._deaths.put_nowait(name)

    async def stop(self, name: str, force: bool = False) -> None:
        proc = self._children.pop(name, None)
        watcher = self._watchers.pop(name, None)
        if watcher:
            watcher.cancel()
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGKILL if force else signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        log.info("stopped replica %s", name)

    async def deaths(self) -> AsyncIterator[str]:
        while True:
            yield await self._deaths.get()

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self._children)))
