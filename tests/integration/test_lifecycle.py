"""Start-up and shutdown of the balancer process: config errors, signals, no orphans."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lbtest import BalancerProcess, replica_processes, request, wait_until

ECHO = Path(__file__).resolve().parent.parent / "echo_replica.py"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_balancer_and_every_replica(sig: int) -> None:
    balancer = BalancerProcess("--replicas", "3")
    try:
        balancer.start()
        assert len(replica_processes(balancer.pid)) == 3
        assert balancer.stop(sig) == 0
        assert replica_processes(balancer.pid) == []
        assert "ringlb stopped" in balancer.log()
    finally:
        balancer.cleanup()


def test_sigterm_drains_requests_in_flight_then_stops() -> None:
    """SIGTERM: the listener closes, an idle keep-alive connection is closed, a request in
    flight gets its answer, then the replicas stop."""
    command = f"{{python}} {ECHO} --id {{name}} --host {{host}} --port {{port}}"
    balancer = BalancerProcess("--replica-command", command, "--drain-timeout", "5")
    try:
        balancer.start()
        idle = socket.create_connection(("127.0.0.1", balancer.port), timeout=10)
        idle.sendall(b"GET /home HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        answers: list[object] = []
        slow = threading.Thread(
            target=lambda: answers.append(request(balancer.port, "GET", "/sleep/1.5"))
        )
        slow.start()
        time.sleep(0.5)  # the slow request is with a replica
        balancer.proc.send_signal(signal.SIGTERM)
        assert idle.recv(1) == b""  # closed between requests, at once
        idle.close()
        wait_until(lambda: _refused(balancer.port), 5)  # no new connections
        slow.join(10)
        [answer] = answers
        assert answer.status == 200 and answer.body == b"slept"
        assert balancer.proc.wait(10) == 0
        assert replica_processes(balancer.pid) == []
    finally:
        balancer.cleanup()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigkill_of_balancer_leaves_no_replica() -> None:
    balancer = BalancerProcess("--replicas", "3")
    try:
        balancer.start()
        assert len(replica_processes(balancer.pid)) == 3
        balancer.stop(signal.SIGKILL)
        # The parent-death signal kills them; the kernel needs a moment to deliver it.
        wait_until(lambda: replica_processes(balancer.pid) == [], 5)
    finally:
        balancer.cleanup()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--heartbeat-interval", "0"],
            "invalid heartbeat_interval (RINGLB_HEARTBEAT_INTERVAL, "
            "--heartbeat-interval): Input should be greater than 0; got '0'",
        ),
        (
            ["--replicas", "many"],
            "invalid replicas (RINGLB_REPLICAS, --replicas): "
            "Input should be a valid integer, unable to parse string as an integer; got 'many'",
        ),
        (["--policy", "nope"], "invalid policy (RINGLB_POLICY, --policy): unknown policy"),
        (
            ["--hostnames", "a,bad name"],
            "invalid hostnames (RINGLB_HOSTNAMES, --hostnames): invalid hostname 'bad name'",
        ),
        (["--replicas", "60"], "replicas (60) exceeds max_replicas (50)"),
        (["--runtime", "vm"], "invalid runtime (RINGLB_RUNTIME, --runtime)"),
        (
            ["--autoscale", "true", "--autoscale-max", "60"],
            "invalid settings: autoscale_max (60) exceeds max_replicas (50)",
        ),
        (
            ["--max-replicas", "100", "--policy", "assignment"],
            "invalid max_replicas (RINGLB_MAX_REPLICAS, --max-replicas): Policy 'assignment' "
            "holds at most 56 replicas; max_replicas is 100",
        ),
        (
            ["--replica-command", "run-replica {name}"],
            "invalid replica_command (RINGLB_REPLICA_COMMAND, --replica-command): must contain "
            "{port}",
        ),
    ],
)
def test_bad_settings_stop_startup_naming_the_option(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ringlb", "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr, result.stderr


def test_bad_environment_variable_is_named(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ringlb", "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"RINGLB_HEARTBEAT_MISSES": "0", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "invalid heartbeat_misses (RINGLB_HEARTBEAT_MISSES" in result.stderr


def test_environment_configures_the_balancer(start_balancer) -> None:
    balancer = start_balancer(env={"RINGLB_HOSTNAMES": "alpha,beta", "RINGLB_REPLICAS": "3"})
    assert balancer.replicas() == ["alpha", "beta", "server_1"]
