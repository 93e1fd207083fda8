"""Several nodes (opt-in: RINGLB_SWARM_NODES=1, root): three private engines, each in a
network namespace of its own on one bridge (tests/private_engine.py's Lan), joined into
one swarm; six replicas spread over the three nodes; one worker node's engine stopped, or
the node cut off the network; its replicas replaced on the others with no failed
idempotent request.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from swarmtest import RequestLoop, SwarmStack, private_engines

from lbtest import wait_until
from private_engine import PrivateEngine

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        os.environ.get("RINGLB_SWARM_NODES") != "1",
        reason="opt-in: RINGLB_SWARM_NODES=1 (three engines in network namespaces)",
    ),
]


def docker(engine: PrivateEngine, *args: str) -> str:
    done = subprocess.run(
        ["docker", "-H", engine.url, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def cluster() -> Iterator[list[PrivateEngine]]:
    """Three engines in one swarm: the first a manager, the others workers."""
    for engines in private_engines(3):
        manager, *workers = engines
        address = manager.netns.address
        docker(manager, "swarm", "init", "--advertise-addr", address)
        token = docker(manager, "swarm", "join-token", "-q", "worker")
        for worker in workers:
            advertise = worker.netns.address
            docker(worker, "swarm", "join", "--advertise-addr", advertise, "--token", token,
                   f"{address}:2377")  # fmt: skip
        wait_until(lambda m=manager: ready_nodes(m) == 3, 60, interval=0.5)
        yield engines


def ready_nodes(manager: PrivateEngine) -> int:
    states = docker(manager, "node", "ls", "--format", "{{.Status}}").split()
    return states.count("Ready")


def placement(stack: SwarmStack, manager: PrivateEngine) -> dict[str, str]:
    """Returns the address of the node each replica's running task is on."""
    nodes = docker(manager, "node", "ls", "-q").split()
    address = {
        n["ID"]: n["Status"]["Addr"] for n in json.loads(docker(manager, "node", "inspect", *nodes))
    }
    placed = {}
    for name, service in stack.services().items():
        task_ids = stack.docker(
            "service", "ps", "-q", "--filter", "desired-state=running", service["ID"]
        ).split()
        (task,) = json.loads(stack.docker("inspect", *task_ids))
        placed[name] = address[task["NodeID"]]
    return placed


def stop_engine(engine: PrivateEngine) -> None:
    engine.stop()


def cut_off(engine: PrivateEngine) -> None:
    assert engine.netns is not None and engine.netns.lan is not None
    engine.netns.lan.cut(engine.netns.inner_if)


@pytest.mark.parametrize("fault", [stop_engine, cut_off], ids=["engine-stopped", "cut-off"])
def test_replicas_spread_and_a_lost_node_is_replaced_elsewhere(cluster, fault) -> None:
    manager, *workers = cluster
    stack = SwarmStack.on(manager)
    stack.swarm("up")
    try:
        assert stack.call("POST", "/add", {"n": 3}).status == 200
        by_replica = placement(stack, manager)
        placed = Counter(by_replica.values())
        print(f"swarm nodes: six replicas placed {dict(placed)}")
        assert len(by_replica) == 6
        assert len(placed) == 3, f"not spread over the three nodes: {dict(placed)}"

        victim = max(workers, key=lambda w: placed[w.netns.address])
        lost = {n for n, node in by_replica.items() if node == victim.netns.address}
        with RequestLoop(stack) as load:
            stopped = time.monotonic()
            fault(victim)

            def replaced() -> list[str] | None:
                names = stack.replicas()
                return names if len(names) == 6 and not lost & set(names) else None

            names = wait_until(replaced, 90, interval=0.05)
            repair = time.monotonic() - stopped
        print(
            f"swarm nodes: {fault.__name__} {victim.netns.address} ({len(lost)} replicas): "
            f"replaced in {repair:.2f} s, {load.sent} requests, {len(load.failures)} failed"
        )
        print(stack.balancer_log("down", "died", "ejected", "replaced", "avoid", "failed"))
        assert load.failures == []
        assert sorted(stack.services()) == sorted(names)
    finally:
        stack.swarm("down", check=False)
