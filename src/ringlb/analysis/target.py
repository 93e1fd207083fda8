"""The balancer under test: one `ringlb serve` started here, or one already running (`--url`).

A target gives the experiments a base URL and a way to kill one replica hard, the way a
crash would: SIGKILL of the replica process (process runtime) or `docker kill` (Docker).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ringlb.runtimes.process import find_replica_processes, free_loopback_port

START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


def replica_processes(parent_pid: int | None = None) -> list[tuple[str, int]]:
    """Returns (name, pid) of live `ringlb replica` processes (of `parent_pid` if given)."""
    return [(p.name, p.pid) for p in find_replica_processes(parent_pid)]


def only_pid(name: str, processes: list[tuple[str, int]]) -> int | None:
    """Returns the pid of the one process called `name`; raises LookupError if several are
    (two balancers on this machine: killing a guess could hit the wrong one)."""
    pids = [pid for n, pid in processes if n == name]
    if len(pids) > 1:
        raise LookupError(f"{len(pids)} local replica processes are called {name!r}")
    return pids[0] if pids else None


def replica_port(pid: int) -> int | None:
    """Returns the `--port` a replica process listens on, if it can be read."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\x00")
        return int(args[args.index(b"--port") + 1])
    return None


class Target:
    """A balancer reachable at `url`."""

    def __init__(self, url: str, description: str) -> None:
        self.url = url.rstrip("/")
        self.description = description

    def processes(self) -> list[tuple[str, int]]:
        """Returns the local replica processes that may belong to this balancer."""
        return replica_processes()

    def kill_replica(self, name: str) -> str:
        """Kills replica `name` without warning; returns how. Raises LookupError if it
        cannot be found (or not told apart) on this machine."""
        pid = only_pid(name, self.processes())
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            return f"kill -9 {pid} (replica process)"
        if shutil.which("docker"):
            done = subprocess.run(["docker", "kill", name], capture_output=True, text=True)
            if done.returncode == 0:
                return f"docker kill {name}"
        raise LookupError(f"replica {name!r} is neither a local process nor a container")

    def direct_url(self, name: str) -> str | None:
        """Returns the replica's own URL when it runs as a local process, else None."""
        try:
            pid = only_pid(name, self.processes())
        except LookupError:
            return None
        port = replica_port(pid) if pid is not None else None
        return f"http://127.0.0.1:{port}" if port else None

    def close(self) -> None:
        """Stops what this target started (nothing for a running balancer)."""


class LocalBalancer(Target):
    """`ringlb serve --runtime process` on a free loopback port, started and stopped here."""

    def __init__(self, serve_args: Sequence[str] = ()) -> None:
        self.port = free_loopback_port()
        self.args = ["--port", str(self.port), "--runtime", "process", *serve_args]
        super().__init__(f"http://127.0.0.1:{self.port}", "ringlb serve " + " ".join(self.args[2:]))
        self._log = tempfile.NamedTemporaryFile(prefix="ringlb-analyze-", suffix=".log")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ringlb", "serve", *self.args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"balancer exited {self._proc.returncode}:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/rep", timeout=2) as reply,
            ):
                if reply.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"balancer not ready within {START_TIMEOUT:g} s:\n{self.log()}")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def warnings(self) -> list[str]:
        """Returns the balancer's WARNING and ERROR log lines so far (replaced replicas...)."""
        return [
            line for line in self.log().splitlines() if " WARNING " in line or " ERROR " in line
        ]

    def processes(self) -> list[tuple[str, int]]:
        return replica_processes(self._proc.pid)

    def kill_replica(self, name: str) -> str:
        pid = only_pid(name, self.processes())
        if pid is None:
            raise LookupError(f"no replica process named {name!r}")
        os.kill(pid, signal.SIGKILL)
        return f"kill -9 {pid} (replica process)"

    def close(self) -> None:
        """Stops the balancer (SIGTERM stops its replicas) and kills any it left behind."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for _name, pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._log.close()
