"""Test support: a real `ringlb serve` subprocess and a plain HTTP client for exact bytes."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ringlb.runtimes.process import find_replica_processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
) -> Reply:
    """Sends one request on a new connection and returns the raw answer."""
    if isinstance(body, str):
        body = body.encode()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def replica_processes(balancer_pid: int) -> list[int]:
    """Returns pids of live replica processes started by the balancer `balancer_pid`."""
    return [p.pid for p in find_replica_processes(balancer_pid)]


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\x00")
    except OSError:
        return []


def pid_of_replica(balancer_pid: int, name: str) -> int:
    """Returns the pid of the replica process `--id name` of that balancer."""
    for process in find_replica_processes(balancer_pid):
        if process.name == name:
            return process.pid
    raise LookupError(f"no replica process named {name}")


def wait_until(predicate, timeout: float, interval: float = 0.05):
    """Returns the first truthy value of `predicate()`, or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)


class BalancerProcess:
    """`ringlb serve` as a real subprocess on a free loopback port."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.args = ["--port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> BalancerProcess:
        import tempfile

        log = tempfile.NamedTemporaryFile(prefix="ringlb-", suffix=".log", delete=False)
        self.log_path = Path(log.name)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ringlb", "serve", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"balancer exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                # Any answer means it listens (a split admin listener proxies /rep).
                return self.get("/rep").status > 0
            return False

        wait_until(ready, timeout, interval=0.1)
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""

    def get(self, path: str, **kw) -> Reply:
        return request(self.port, "GET", path, **kw)

    def call(self, method: str, path: str, payload: object | None = None, **kw) -> Reply:
        body = None if payload is None else json.dumps(payload)
        return request(self.port, method, path, body=body, **kw)

    def replicas(self) -> list[str]:
        return self.get("/rep").json()["message"]["replicas"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signals the balancer and waits for it to exit; returns its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def cleanup(self) -> None:
        """Stops the balancer and kills any replica it left behind (never fails a test)."""
        if self.proc is None:
            return
        self.stop()
        for pid in replica_processes(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.log_path:
            self.log_path.unlink(missing_ok=True)


class LoadLoop:
    """`workers` threads sending idempotent `GET path` in a loop, each on a new connection;
    records every answer. Bounded: stops when told, after `max_requests` in all, or after
    `max_seconds`, whichever comes first."""

    def __init__(
        self,
        port: int,
        path: str = "/home",
        workers: int = 4,
        max_requests: int = 20_000,
        max_seconds: float = 60.0,
    ) -> None:
        self.port, self.path = port, path
        self.max_requests, self.max_seconds = max_requests, max_seconds
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    @property
    def sent(self) -> int:
        return len(self.latencies) + len(self.failures)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.sent >= self.max_requests:
                return
            started = time.monotonic()
            try:
                reply = request(self.port, "GET", self.path, timeout=15)
                outcome = None if reply.status == 200 else f"{reply.status} {reply.body[:120]!r}"
            except OSError as exc:
                outcome = repr(exc)
            with self._lock:
                if outcome is None:
                    self.latencies.append(time.monotonic() - started)
                else:
                    self.failures.append(outcome)
            if outcome is not None:
                time.sleep(0.05)  # a refused connection fails at once: do not spin on it

    def wait_for(self, more: int, timeout: float = 30.0) -> None:
        """Waits until `more` further requests were answered (or failed)."""
        target = self.sent + more
        wait_until(lambda: self.sent >= target, timeout)

    def median_ms(self) -> float:
        return 1000 * statistics.median(self.latencies) if self.latencies else 0.0

    def __enter__(self) -> LoadLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
