"""Replica failures under a client loop: detection, replacement, and no client errors."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

from lbtest import BalancerProcess, pid_of_replica, replica_processes, request, wait_until

GENERATED = re.compile(r"^server_[0-9a-f]{6}$")


class ClientLoop:
    """GET /home in a loop on a background thread; records every non-200 answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 60  # bounded even if the test forgets to stop it
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                reply = request(self.port, "GET", "/home", timeout=10)
                self.statuses.append(reply.status)
                if reply.status != 200:
                    self.failures.append(f"{reply.status} {reply.body!r}")
            except OSError as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> ClientLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def replaced(balancer: BalancerProcess, victim: str) -> list[str] | None:
    names = balancer.replicas()
    if victim in names or len(names) != 3:
        return None
    return names


def test_kill_9_is_repaired_without_client_errors(balancer: BalancerProcess) -> None:
    victim_pid = pid_of_replica(balancer.pid, "server_2")
    with ClientLoop(balancer.port) as loop:
        wait_until(lambda: len(loop.statuses) > 20, 10)
        os.kill(victim_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        names = wait_until(lambda: replaced(balancer, "server_2"), 10)
        repaired_in = time.monotonic() - killed_at
        served_before = len(loop.statuses)
        wait_until(lambda: len(loop.statuses) > served_before + 20, 10)
    new = [n for n in names if n not in ("server_1", "server_3")]
    assert len(new) == 1 and GENERATED.match(new[0]), names
    assert loop.failures == [], loop.failures[:5]
    print(
        f"\nkill -9: replaced by {new[0]} in {repaired_in:.2f} s; "
        f"{len(loop.statuses)} requests, {len(loop.failures)} errors"
    )


def test_hung_replica_is_detected_by_heartbeat_and_replaced(balancer: BalancerProcess) -> None:
    """SIGSTOP: the process lives on but stops answering; only heartbeats can tell."""
    victim_pid = pid_of_replica(balancer.pid, "server_3")
    try:
        os.kill(victim_pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        wait_until(lambda: replaced(balancer, "server_3"), 15)
        detected_in = time.monotonic() - stopped_at
    finally:
        # The supervisor deletes the hung replica; make sure it is not left stopped.
        if victim_pid in replica_processes(balancer.pid):
            os.kill(victim_pid, signal.SIGCONT)
    wait_until(lambda: victim_pid not in replica_processes(balancer.pid), 10)
    assert balancer.get("/home").status == 200
    print(f"\nSIGSTOP: out of /rep and replaced within {detected_in:.2f} s")


def test_target_follows_add_and_rm(balancer: BalancerProcess) -> None:
    """After /add and /rm, a death is replaced up to the new target, not the initial N."""
    balancer.call("POST", "/add", {"n": 2, "hostnames": ["extra_1", "extra_2"]})
    balancer.call("DELETE", "/rm", {"hostnames": ["server_1"]})
    assert len(balancer.replicas()) == 4
    os.kill(pid_of_replica(balancer.pid, "extra_1"), signal.SIGKILL)
    names = wait_until(
        lambda: (n := balancer.replicas()) and "extra_1" not in n and len(n) == 4 and n, 10
    )
    assert "server_1" not in names
    # That no fifth is started later is tests/unit/test_control.py's (a manual clock).
