"""Start-up and shutdown of the balancer process: config errors, signals, no orphans."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from lbtest import BalancerProcess, replica_processes, wait_until


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
