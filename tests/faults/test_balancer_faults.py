"""Faults of the balancer itself and of the Docker engine under it.

- the balancer killed with SIGKILL and started again: the process runtime leaves no orphan
  replica; the docker runtime adopts its containers (same ids, same names);
- the Docker daemon restarted under a running balancer: it reconnects to the event stream
  and repairs what died. Restarting the daemon kills every container on the machine
  (unless it runs with live-restore) and disturbs anyone else using the engine, so this one
  runs only when asked: RINGLB_FAULTS_RESTART_DOCKERD=1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from faultlib import Figures, LoadLoop, since

from lbtest import BalancerProcess, replica_processes, wait_until

REPO = Path(__file__).resolve().parents[2]
RESTART_DOCKERD_ENV = "RINGLB_FAULTS_RESTART_DOCKERD"


def _serves(balancer: BalancerProcess) -> bool:
    try:
        return balancer.get("/home", timeout=5).status == 200
    except OSError:
        return False


def _restart_on_same_port(old: BalancerProcess, *args: str) -> BalancerProcess:
    """Returns a new balancer with `args` on `old`'s port (not started)."""
    new = BalancerProcess(*args)
    new.port = old.port
    new.args = ["--port", str(old.port), *args]
    return new


def test_balancer_sigkill_process_runtime_leaves_no_orphans_and_restarts() -> None:
    args = ("--seed", "31")
    first = BalancerProcess(*args).start()
    second: BalancerProcess | None = None
    figures = Figures("balancer killed (SIGKILL) and restarted")
    try:
        orphans = replica_processes(first.pid)
        assert len(orphans) == 3
        with LoadLoop(first.port, workers=2) as load:
            load.wait_for(50)
            first.stop(signal.SIGKILL)
            t0 = time.monotonic()
            wait_until(lambda: replica_processes(first.pid) == [], 15, interval=0.02)
            figures.detection_s = since(t0)
            second = _restart_on_same_port(first, *args).start()
            wait_until(lambda: _serves(second), 30)
            figures.recovery_s = since(t0)
            load.wait_for(50)
        figures.requests, figures.client_errors = load.sent, len(load.failures)
        figures.note = (
            "errors are connections refused while no balancer listened; detection = every "
            "replica of the killed balancer gone (parent-death signal), recovery = the "
            "restarted balancer serving."
        )
        figures.record()
        assert not any(_pid_alive(pid) for pid in orphans)
        assert all("Connection" in f or "Remote" in f for f in load.failures), load.failures[:5]
        assert second.replicas() == ["server_1", "server_2", "server_3"]
    finally:
        for balancer in (first, second):
            if balancer is not None:
                balancer.cleanup()


def _docker_args(owner: str, *extra: str) -> tuple[str, ...]:
    return (
        "--runtime", "docker", "--replicas", "2", "--docker-owner", owner,
        "--docker-network", f"{owner}-net", *extra,
    )  # fmt: skip


def _container_ids(client, owner: str) -> dict[str, str]:
    found = client.containers.list(
        filters={"label": [f"ringlb.owner={owner}", "ringlb.role=replica"]}
    )
    return {c.name: c.id for c in found}


@pytest.mark.docker
def test_balancer_sigkill_docker_runtime_adopts_its_replicas(
    docker_client, docker_owner: str
) -> None:
    args = _docker_args(docker_owner)
    first = BalancerProcess(*args).start(timeout=90)
    second: BalancerProcess | None = None
    figures = Figures("balancer killed (SIGKILL) and restarted", runtime="docker")
    try:
        names = first.replicas()
        ids = _container_ids(docker_client, docker_owner)
        assert sorted(ids) == sorted(names)
        first.stop(signal.SIGKILL)
        t0 = time.monotonic()
        second = _restart_on_same_port(first, *args).start(timeout=90)
        wait_until(lambda: _serves(second), 60)
        figures.recovery_s = since(t0)
        with LoadLoop(second.port, workers=2) as load:
            load.wait_for(100)
        figures.requests, figures.client_errors = load.sent, len(load.failures)
        figures.note = "containers kept running; the restarted balancer adopted them (same ids)."
        figures.record()
        assert second.replicas() == names
        assert _container_ids(docker_client, docker_owner) == ids
        assert "adopted 2 replica(s)" in second.log()
        assert load.failures == [], load.failures[:5]
    finally:
        for balancer in (first, second):
            if balancer is not None:
                balancer.cleanup()


def _dockerd_pid() -> int | None:
    done = subprocess.run(["ps", "-C", "dockerd", "-o", "pid=,stat="], capture_output=True)
    for line in done.stdout.decode().splitlines():
        pid, stat = line.split()
        if not stat.startswith("Z"):
            return int(pid)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.docker
@pytest.mark.skipif(
    os.environ.get(RESTART_DOCKERD_ENV) != "1",
    reason=f"restarts the shared Docker daemon: opt in with {RESTART_DOCKERD_ENV}=1",
)
def test_docker_daemon_restart_under_the_balancer(docker_client, docker_owner: str) -> None:
    """dockerd is stopped (SIGTERM) and started again as scripts/docker-engine.sh starts it.
    Without live-restore the replicas die with the daemon; the balancer must notice once the
    event stream is back, replace them, and keep watching events afterwards."""
    pid = _dockerd_pid()
    if pid is None:
        pytest.skip("no dockerd process on this machine (a remote engine cannot be restarted)")
    balancer = BalancerProcess(*_docker_args(docker_owner, "--respawn-backoff-max", "5"))
    balancer.start(timeout=90)
    figures = Figures("Docker daemon restarted", runtime="docker")
    try:
        with LoadLoop(balancer.port, workers=2, max_seconds=240) as load:
            load.wait_for(50)
            os.kill(pid, signal.SIGTERM)
            t0 = time.monotonic()
            wait_until(lambda: not _pid_alive(pid), 60, interval=0.2)
            subprocess.run([str(REPO / "scripts" / "docker-engine.sh")], check=True, timeout=120)
            wait_until(lambda: "Docker event stream reconnected" in balancer.log(), 60)
            figures.detection_s = since(t0)
            wait_until(lambda: len(_serving(balancer)) == 2 and _serves(balancer), 120)
            figures.recovery_s = since(t0)
            load.wait_for(50)
        figures.requests, figures.client_errors = load.sent, len(load.failures)
        figures.note = (
            "the replicas die with the daemon (no live-restore), so clients see errors until "
            "replacements start; detection = event stream reconnected."
        )
        figures.record()
        # The stream works after the restart: a kill is seen and repaired.
        victim = balancer.replicas()[0]
        docker_client.containers.get(victim).kill()
        wait_until(lambda: victim not in balancer.replicas(), 30)
        wait_until(lambda: len(balancer.replicas()) == 2, 60)
    finally:
        balancer.cleanup()


def _serving(balancer: BalancerProcess) -> list[str]:
    try:
        return balancer.replicas()
    except OSError:
        return []
