"""The Docker deployment with a real engine: `make up`, replica containers on net1, a
RINGLB_* setting set for `make up` reaching the balancer, the contract through the
published port, repair after `docker kill`, a user's `docker stop X && docker rm X`,
adoption after a balancer restart, `make down` leaving nothing. One stack is shared by the
module (tests run in file order and each leaves the stack as it found it); everything is
removed even on failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from dockertest import REPO, make, remove_owned

from integration.contract_checks import run_contract_checks
from lbtest import free_port, request, wait_until

pytestmark = pytest.mark.docker

OWNER = "ringlb"  # what docker-compose.yml sets: `make down` removes by this label
NETWORK = "net1"
LB_CONTAINER = "ringlb-lb"
GENERATED = re.compile(r"^server_[0-9a-f]{6}$")


@dataclass
class Stack:
    port: int
    env: dict[str, str]

    def call(self, method: str, path: str, payload: object | None = None):
        body = None if payload is None else json.dumps(payload)
        return request(self.port, method, path, body=body)

    def replicas(self) -> list[str]:
        return self.call("GET", "/rep").json()["message"]["replicas"]


@pytest.fixture(scope="module")
def stack(docker_client) -> Iterator[Stack]:
    """`make up` on a free host port; `make down` and a cleanup by label afterwards."""
    port = free_port()
    # A setting docker-compose.yml does not name: it must reach the balancer all the same.
    env = {**os.environ, "RINGLB_HOST_PORT": str(port), "RINGLB_POLICY": "assignment"}
    if docker_client.containers.list(all=True, filters={"name": f"^{LB_CONTAINER}$"}):
        # On a CI machine a stack left from an earlier session is stale: take it down. On a
        # developer's machine it is theirs: refuse rather than take over.
        if os.environ.get("CI") != "true":
            pytest.fail(f"a ringlb stack is already running ({LB_CONTAINER}): `make down` first")
        make("down", env)
    try:
        make("up", env)
        yield Stack(port, env)
    finally:
        subprocess.run(["make", "down"], cwd=REPO, env=env, capture_output=True, timeout=300)
        remove_owned(docker_client, OWNER)


def replica_containers(client) -> dict[str, object]:
    found = client.containers.list(
        all=True, filters={"label": [f"ringlb.owner={OWNER}", "ringlb.role=replica"]}
    )
    return {c.name: c for c in found}


def fetch_by_alias(alias: str, path: str = "/home") -> str:
    """Returns the body of http://<alias>:5000<path> fetched from inside net1 (the balancer)."""
    code = (
        "import urllib.request, sys; "
        f"print(urllib.request.urlopen('http://{alias}:5000{path}', timeout=5).read().decode())"
    )
    done = subprocess.run(
        ["docker", "exec", LB_CONTAINER, "python3", "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_up_starts_three_replica_containers_on_net1(stack: Stack, docker_client) -> None:
    assert stack.replicas() == ["server_1", "server_2", "server_3"]
    containers = replica_containers(docker_client)
    assert sorted(containers) == ["server_1", "server_2", "server_3"]
    for name, container in containers.items():
        attrs = container.attrs
        assert attrs["State"]["Running"], name
        assert f"SERVER_ID={name}" in attrs["Config"]["Env"]
        assert attrs["Config"]["User"] not in ("", "0", "root"), "replicas run unprivileged"
        published = [v for v in attrs["NetworkSettings"]["Ports"].values() if v]
        assert published == [] and not attrs["HostConfig"]["PortBindings"], "published"
        endpoint = attrs["NetworkSettings"]["Networks"][NETWORK]
        assert name in endpoint["Aliases"]
        assert attrs["Config"]["Labels"]["ringlb.rid"].isdigit()
        host = attrs["HostConfig"]
        assert host["Memory"] == 256 * 1024 * 1024 and host["NanoCpus"] == 10**9
        assert host["PidsLimit"] == 128 and host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        assert host["Privileged"] is False and host["ReadonlyRootfs"] is True


def test_a_setting_set_for_make_up_reaches_the_balancer(stack: Stack, docker_client) -> None:
    env = docker_client.containers.get(LB_CONTAINER).attrs["Config"]["Env"]
    assert "RINGLB_POLICY=assignment" in env
    assert stack.call("GET", "/policy").json()["message"]["name"] == "assignment"


def test_contract_holds_through_the_published_port(stack: Stack) -> None:
    run_contract_checks(stack.port)


def test_spec_add_payload_creates_containers_reachable_by_alias(stack: Stack, docker_client):
    before = stack.replicas()
    new = ["S5", "S4", "S10", "S11"]
    reply = stack.call("POST", "/add", {"n": 4, "hostnames": new})
    assert reply.status == 200, reply.body
    assert reply.json()["message"] == {"N": len(before) + 4, "replicas": before + new}
    containers = replica_containers(docker_client)
    for name in new:
        assert containers[name].status == "running"
        assert fetch_by_alias(name) == (
            f'{{"message":"Hello from Server: {name}","status":"successful"}}'
        )
    reply = stack.call("DELETE", "/rm", {"n": 4, "hostnames": new})
    assert reply.status == 200, reply.body
    assert stack.replicas() == before


def test_rm_removes_containers_before_answering_and_names_come_back(
    stack: Stack, docker_client
) -> None:
    before = stack.replicas()
    assert stack.call("POST", "/add", {"hostnames": ["S5"]}).status == 200
    reply = stack.call("DELETE", "/rm", {"hostnames": ["S5"]})
    assert reply.status == 200, reply.body
    assert "S5" not in replica_containers(docker_client), "/rm answered before removing S5"
    reply = stack.call("POST", "/add", {"hostnames": ["S5"]})
    assert reply.status == 200, reply.body
    assert replica_containers(docker_client)["S5"].status == "running"
    assert stack.call("POST", "/rm", {"hostnames": ["S5"]}).status == 200
    assert stack.replicas() == before


def test_docker_kill_is_repaired_under_a_new_name_without_client_errors(
    stack: Stack, docker_client
) -> None:
    assert "server_2" in stack.replicas()
    failures: list[str] = []
    sent = 0
    done = threading.Event()

    def load() -> None:  # bounded: stops when told, or after 20,000 requests
        nonlocal sent
        while not done.is_set() and sent < 20_000:
            try:
                reply = request(stack.port, "GET", "/home", timeout=10)
                if reply.status != 200:
                    failures.append(f"{reply.status} {reply.body[:200]!r}")
            except OSError as exc:
                failures.append(repr(exc))
            sent += 1

    loop = threading.Thread(target=load)
    loop.start()
    try:
        wait_until(lambda: sent > 50, 30)
        killed = time.monotonic()
        docker_client.containers.get("server_2").kill()

        def repaired() -> list[str] | None:
            names = stack.replicas()
            fresh = [n for n in names if GENERATED.match(n)]
            return names if len(names) == 3 and "server_2" not in names and fresh else None

        names = wait_until(repaired, 30, interval=0.05)
        repair = time.monotonic() - killed
        sent_at_repair = sent
        wait_until(lambda: sent > sent_at_repair + 50, 30)
    finally:
        done.set()
        loop.join()
    print(f"repair after docker kill: {repair:.2f} s, {sent} requests, {len(failures)} failed")
    assert failures == []
    containers = replica_containers(docker_client)
    # The killed container is left to its owner (docker_keep_dead), whatever the race
    # between the `kill` event and the container's stop; the owner's removal then works.
    assert containers["server_2"].status == "exited"
    assert sorted(n for n, c in containers.items() if c.status == "running") == sorted(names)
    containers["server_2"].remove()
    assert sorted(replica_containers(docker_client)) == sorted(names)


def test_a_user_stops_then_removes_a_replica_and_both_succeed(stack: Stack, docker_client):
    """The specification's `docker stop X && docker rm X` (and failure tests doing
    `container.stop()` then `container.remove(force=True)`): ringlb leaves the stopped
    container to its owner, then replaces the replica under a new name."""
    victim = stack.replicas()[0]
    container = docker_client.containers.get(victim)
    started = time.monotonic()
    container.stop(timeout=10)
    container.remove(force=True)  # raises if ringlb removed it first, or is removing it
    removed = time.monotonic() - started

    def replaced() -> list[str] | None:
        names = stack.replicas()
        return names if len(names) == 3 and victim not in names else None

    names = wait_until(replaced, 30, interval=0.05)
    print(
        f"stop + rm of {victim}: {removed:.2f} s; replaced after {time.monotonic() - started:.2f} s"
    )
    assert sorted(replica_containers(docker_client)) == sorted(names)


def test_balancer_restart_adopts_the_same_replicas(stack: Stack, docker_client) -> None:
    names = stack.replicas()
    ids = {n: c.id for n, c in replica_containers(docker_client).items()}
    docker_client.containers.get(LB_CONTAINER).restart(timeout=10)
    wait_until(lambda: _answers(stack), 60, interval=0.2)
    assert stack.replicas() == names
    assert {n: c.id for n, c in replica_containers(docker_client).items()} == ids


def _answers(stack: Stack) -> bool:
    try:
        return stack.call("GET", "/rep").status == 200
    except OSError:
        return False


def test_make_down_leaves_nothing_of_ours(stack: Stack, docker_client) -> None:
    make("down", stack.env)
    assert docker_client.containers.list(all=True, filters={"label": f"ringlb.owner={OWNER}"}) == []
    assert [n.name for n in docker_client.networks.list(names=[NETWORK]) if n.name == NETWORK] == []


# -- the docker runtime driven by a balancer on the host: engine trouble, clearly ---------


@pytest.fixture
def test_owner(docker_client) -> Iterator[str]:
    owner = f"pytest-{os.getpid()}"
    yield owner
    remove_owned(docker_client, owner)


def test_missing_image_answers_add_with_a_clear_error(
    start_balancer, test_owner: str, docker_client
) -> None:
    balancer = start_balancer(
        "--runtime", "docker", "--replicas", "0", "--docker-owner", test_owner,
        "--docker-network", f"{test_owner}-net", "--docker-image", "ringlb-missing:none",
    )  # fmt: skip
    reply = balancer.call("POST", "/add", {"n": 1, "hostnames": ["ghost"]})
    assert reply.status == 500
    message = reply.json()["message"]
    assert message.startswith("<Error> Replica 'ghost' failed to start: ")
    assert "image 'ringlb-missing:none' not found" in message
    assert balancer.replicas() == []
    assert "image 'ringlb-missing:none' not found" in balancer.log()


def test_unreachable_engine_stops_startup_with_a_clear_line(test_owner: str) -> None:
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    command = [sys.executable, "-m", "ringlb", "serve", "--runtime", "docker", "--port", "0"]
    done = subprocess.run(
        [*command, "--docker-owner", test_owner, "--docker-api-timeout", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot start: Docker engine error while listing replicas" in done.stderr
