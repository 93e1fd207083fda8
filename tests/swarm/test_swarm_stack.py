"""The Swarm deployment on a one-node swarm of a private engine (see conftest.py):
`scripts/swarm.py up` (what `make swarm-up` runs after the build) makes the swarm and
deploys deploy/stack.yml; a RINGLB_* setting set for it reaches the balancer; replicas are
services; the contract holds through the published
port; `docker kill` of a replica's container is repaired under a new name with no failed
request; /rm removes services before it answers (also one whose name Swarm refuses); a
restarted balancer adopts the services; `swarm.py down` leaves nothing, not even the swarm.
One stack is shared by the module; tests run in file order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from swarmtest import GENERATED, OWNER, PORT, RequestLoop, SwarmStack

from integration.contract_checks import run_contract_checks
from lbtest import wait_until
from private_engine import PrivateEngine

pytestmark = pytest.mark.docker

NETWORK = "net1"


@pytest.fixture(scope="module")
def stack(swarm_engine: PrivateEngine) -> Iterator[SwarmStack]:
    swarm = SwarmStack.on(swarm_engine)
    started = time.monotonic()
    swarm.swarm("up")
    print(f"swarm.py up on a private engine: {time.monotonic() - started:.1f} s")
    yield swarm
    swarm.swarm("down", check=False)


def test_up_makes_a_swarm_and_runs_each_replica_as_a_service(stack: SwarmStack) -> None:
    assert stack.docker("info", "--format", "{{.Swarm.LocalNodeState}}") == "active"
    assert stack.replicas() == ["server_1", "server_2", "server_3"]
    assert stack.call("GET", "/policy").json()["message"]["name"] == "assignment"
    services = stack.services()
    assert sorted(services) == ["server_1", "server_2", "server_3"]
    for name, service in services.items():
        spec = service["Spec"]
        container = spec["TaskTemplate"]["ContainerSpec"]
        assert spec["Name"] == name
        assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
        assert spec["EndpointSpec"]["Mode"] == "dnsrr"
        assert "Ports" not in spec["EndpointSpec"], "published"
        assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "none"
        assert container["Hostname"] == name
        assert f"SERVER_ID={name}" in container["Env"]
        assert container["Image"].startswith("sha256:"), "named by ID: nodes never pull"
        assert container["CapabilityDrop"] == ["ALL"] and container["ReadOnly"] is True
        limits = spec["TaskTemplate"]["Resources"]["Limits"]
        assert limits == {"NanoCPUs": 10**9, "MemoryBytes": 256 * 1024**2, "Pids": 128}
        (attachment,) = spec["TaskTemplate"]["Networks"]
        assert attachment["Aliases"] == [name]
        network = json.loads(stack.docker("network", "inspect", attachment["Target"]))[0]
        assert network["Name"] == NETWORK and network["Driver"] == "overlay"
        assert network["Attachable"] is True
        tasks = stack.docker("service", "ps", "-q", "--filter", "desired-state=running", name)
        assert len(tasks.split()) == 1


def test_contract_holds_through_the_published_port(stack: SwarmStack) -> None:
    run_contract_checks(PORT, stack.host)


def test_rm_removes_services_before_answering(stack: SwarmStack) -> None:
    before = stack.replicas()
    # "a.b" is a valid contract name but not a valid service name: an internal one is used.
    reply = stack.call("POST", "/add", {"hostnames": ["S5", "a.b"]})
    assert reply.status == 200, reply.body
    services = stack.services()
    assert services["S5"]["Spec"]["Name"] == "S5"
    assert services["a.b"]["Spec"]["Name"].startswith("ringlb-")
    hostname = services["a.b"]["Spec"]["TaskTemplate"]["ContainerSpec"]["Hostname"]
    assert hostname == "a.b"
    reply = stack.call("DELETE", "/rm", {"hostnames": ["S5", "a.b"]})
    assert reply.status == 200, reply.body
    left = stack.services()
    assert "S5" not in left and "a.b" not in left, "/rm answered before removing services"
    assert stack.container_of("S5") == "" and stack.container_of("a.b") == ""
    reply = stack.call("POST", "/add", {"hostnames": ["S5"]})  # the name is free at once
    assert reply.status == 200, reply.body
    assert stack.call("POST", "/rm", {"hostnames": ["S5"]}).status == 200
    assert stack.replicas() == before


def test_docker_kill_is_repaired_under_a_new_name_without_client_errors(
    stack: SwarmStack,
) -> None:
    assert "server_2" in stack.replicas()
    with RequestLoop(stack) as load:
        victim = stack.container_of("server_2")
        killed = time.monotonic()
        stack.docker("kill", victim)

        def repaired() -> list[str] | None:
            names = stack.replicas()
            fresh = [n for n in names if GENERATED.match(n)]
            return names if len(names) == 3 and "server_2" not in names and fresh else None

        names = wait_until(repaired, 60, interval=0.05)
        repair = time.monotonic() - killed
    failures, sent = load.failures, load.sent
    print(f"swarm: repair after docker kill: {repair:.2f} s, {sent} requests", end="")
    print(f", {len(failures)} failed")
    print(stack.balancer_log("down", "died", "replaced", "avoid"))
    assert failures == []
    assert sorted(stack.services()) == sorted(names)


def test_restarted_balancer_adopts_the_replica_services(stack: SwarmStack) -> None:
    names = stack.replicas()
    ids = {name: service["ID"] for name, service in stack.services().items()}
    balancer = stack.balancer_container()
    stack.docker("kill", balancer)  # Swarm restarts the balancer's task (condition any)

    def answers_again() -> bool:
        try:
            return stack.balancer_container() not in ("", balancer) and stack.replicas() == names
        except OSError:
            return False

    wait_until(answers_again, 90, interval=0.2)
    assert {name: service["ID"] for name, service in stack.services().items()} == ids


def test_down_leaves_nothing_and_leaves_the_swarm_it_made(stack: SwarmStack) -> None:
    started = time.monotonic()
    stack.swarm("down")
    print(f"swarm.py down on a private engine: {time.monotonic() - started:.1f} s")
    assert stack.docker("info", "--format", "{{.Swarm.LocalNodeState}}") == "inactive"
    assert stack.docker("ps", "-aq", "--filter", f"label=ringlb.owner={OWNER}") == ""
    networks = stack.docker("network", "ls", "--format", "{{.Name}}").split()
    assert sorted(networks) == ["host", "none"], "the engine is not as it was"
