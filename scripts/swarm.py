#!/usr/bin/env python3
"""`make swarm-up`, `make swarm-down`, `make swarm-ps`: the ringlb stack on Docker Swarm.

    swarm.py up | down | ps

up: puts the engine in a one-node swarm when it is in none (and labels its node so that
`down` knows to leave it), creates the attachable overlay network, deploys
deploy/stack.yml as the stack `ringlb` (every RINGLB_* setting set here passed on, see
settings_override.py; on a one-node swarm a second balancer on RINGLB_SECOND_PORT, 5001)
and waits until every balancer's /rep answers. down: removes the stack, every service the
balancers made (replicas and their lease, by label), the network, and leaves the swarm
only if `up` joined it. The engine is the one the docker CLI talks to
(DOCKER_HOST or the default socket); the image must be built (`make build`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STACK = "ringlb"
STACK_FILE = REPO / "deploy" / "stack.yml"
OVERRIDE = REPO / ".cache" / "stack.settings.yml"
OWNER = "ringlb-swarm"  # deploy/stack.yml's RINGLB_DOCKER_OWNER
INIT_LABEL = "ringlb.swarm-init"  # on the node of a swarm that `up` created
IMAGE = os.environ.get("RINGLB_IMAGE", "ringlb:latest")
NETWORK = os.environ.get("RINGLB_SWARM_NETWORK", "net1")
HOST_PORT = int(os.environ.get("RINGLB_HOST_PORT", "5000"))
SECOND_PORT = int(os.environ.get("RINGLB_SECOND_PORT", str(HOST_PORT + 1)))
BALANCERS = ("lb", "lb-second")  # deploy/stack.yml's balancer services
# Where /rep is probed and `swarm init` advertises: this machine unless told otherwise.
PROBE_HOST = os.environ.get("RINGLB_SWARM_PROBE_HOST", "127.0.0.1")
ADVERTISE = os.environ.get("RINGLB_SWARM_ADVERTISE_ADDR", "127.0.0.1")
WAIT = float(os.environ.get("RINGLB_SWARM_WAIT", "120"))


def docker(*args: str, check: bool = True) -> str:
    """Runs the docker CLI; returns its output, or exits with its error when it fails."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        sys.exit(f"swarm: docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def say(text: str) -> None:
    print(f"swarm: {text}", flush=True)


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}")


def join_or_init() -> None:
    state = swarm_state()
    if state == "active":
        if docker("info", "--format", "{{.Swarm.ControlAvailable}}") != "true":
            sys.exit("swarm: this engine is a worker: run make swarm-up on a manager")
        say("the engine is in a swarm already: using it")
        return
    if state != "inactive":
        sys.exit(f"swarm: the engine's swarm state is {state!r}; wait or fix it first")
    say(f"no swarm: initialising a one-node swarm (advertise {ADVERTISE})")
    docker("swarm", "init", "--advertise-addr", ADVERTISE)
    docker("node", "update", "--label-add", f"{INIT_LABEL}=1", node_id())


def node_id() -> str:
    return docker("info", "--format", "{{.Swarm.NodeID}}")


def node_ids() -> list[str]:
    return docker("node", "ls", "-q").split()


def ensure_network() -> None:
    listed = docker("network", "ls", "--format", "{{.Name}} {{.Driver}}").splitlines()
    found = dict(line.split() for line in listed).get(NETWORK)  # the name filter is a substring
    if found == "overlay":
        return
    if found:
        sys.exit(
            f"swarm: network {NETWORK} exists with driver {found} (make up's?): make down "
            f"first, or choose another with RINGLB_SWARM_NETWORK"
        )
    say(f"creating the attachable overlay network {NETWORK}")
    docker(
        "network", "create", "--driver", "overlay", "--attachable",
        "--label", f"ringlb.owner={OWNER}", NETWORK,
    )  # fmt: skip


def deploy() -> None:
    image_id = docker("image", "inspect", "--format", "{{.Id}}", IMAGE, check=False)
    if not image_id:
        sys.exit(f"swarm: image {IMAGE} not found: make build first")
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "settings_override.py"), str(STACK_FILE),
         ",".join(BALANCERS), str(OVERRIDE)],
        check=True,
    )  # fmt: skip
    host = os.environ.get("DOCKER_HOST", "")
    socket = host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"
    os.environ.update(RINGLB_IMAGE_REF=image_id, RINGLB_ENGINE_SOCKET=socket)
    os.environ.update(RINGLB_SECOND_PORT=str(SECOND_PORT))
    # Global mode runs one balancer per node: on one node, a second one beside it.
    os.environ.setdefault("RINGLB_SECOND_BALANCER", "1" if len(node_ids()) == 1 else "0")
    say(f"deploying stack {STACK} ({IMAGE} = {image_id[:19]})")
    docker(
        "stack", "deploy", "--resolve-image", "never", "--prune",
        "-c", str(STACK_FILE), "-c", str(OVERRIDE), STACK,
    )  # fmt: skip


def balancer_ports() -> list[int]:
    second = os.environ.get("RINGLB_SECOND_BALANCER", "0") != "0"
    return [HOST_PORT, SECOND_PORT] if second else [HOST_PORT]


def wait_for_rep(ports: list[int]) -> None:
    """Waits until every balancer's /rep answers with the same replicas, and some: a
    follower answers as soon as it listens, with what the leader runs by then."""
    deadline = time.monotonic() + WAIT
    while True:
        answers = {port: rep(port) for port in ports}
        lists = list(answers.values())
        wanted = lists[0] or os.environ.get("RINGLB_REPLICAS") == "0"
        if lists[0] is not None and wanted and all(names == lists[0] for names in lists):
            say(f"/rep on {', '.join(map(str, ports))}: {', '.join(lists[0])}")
            return
        if time.monotonic() > deadline:
            for service in BALANCERS:
                print(docker("service", "ps", "--no-trunc", f"{STACK}_{service}", check=False))
            sys.exit(f"swarm: /rep answers {answers} after {WAIT:g} s (make swarm-ps)")
        time.sleep(0.5)


def rep(port: int) -> list[str] | None:
    """Returns the replicas /rep lists on `port`, or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{PROBE_HOST}:{port}/rep", timeout=2) as reply:
            return json.loads(reply.read())["message"]["replicas"]
    except (OSError, ValueError, KeyError):
        return None


def up() -> None:
    join_or_init()
    ensure_network()
    deploy()
    ports = balancer_ports()
    wait_for_rep(ports)
    where = " and ".join(f"http://{PROBE_HOST}:{port}" for port in ports)
    say(f"ringlb serves on {where} (make swarm-ps, make swarm-down)")


def balancer_made_services() -> list[str]:
    """Returns the services the balancers made: the replicas and the lease."""
    return docker("service", "ls", "-q", "--filter", f"label=ringlb.owner={OWNER}").split()


def until(what: str, done, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            sys.exit(f"swarm: {what} still there after {timeout:g} s")
        time.sleep(0.5)


def down() -> None:
    if swarm_state() != "active":
        say("the engine is in no swarm: nothing to remove")
        return
    # The balancers first, so that they do not replace the replicas removed next.
    docker("stack", "rm", STACK, check=False)
    until("the stack", lambda: not docker("stack", "ps", "-q", STACK, check=False))
    services = balancer_made_services()
    if services:
        say(f"removing {len(services)} service(s) the balancers made (replicas, lease)")
        docker("service", "rm", *services, check=False)
    until("the balancers' services", lambda: not balancer_made_services())
    network = docker("network", "ls", "-q", "--filter", f"label=ringlb.owner={OWNER}")
    if network:
        # Removed once the tasks' containers have left it.
        until(f"network {NETWORK}", lambda: remove_network(network.split()))
    node = json.loads(docker("node", "inspect", node_id()))[0]
    if node["Spec"].get("Labels", {}).get(INIT_LABEL):
        say("leaving the swarm that make swarm-up created")
        docker("swarm", "leave", "--force")
        # `swarm init` made the gateway bridge of overlay networks; leaving keeps it.
        docker("network", "rm", "docker_gwbridge", check=False)
    say("done")


def remove_network(ids: list[str]) -> bool:
    return subprocess.run(["docker", "network", "rm", *ids], capture_output=True).returncode == 0


def ps() -> None:
    if swarm_state() != "active":
        say("the engine is in no swarm")
        return
    print(docker("stack", "ps", STACK, check=False))
    labels = ["--filter", f"label=ringlb.owner={OWNER}"]
    print(docker("service", "ls", *labels))


if __name__ == "__main__":
    commands = {"up": up, "down": down, "ps": ps}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} up|down|ps")
    commands[sys.argv[1]]()
