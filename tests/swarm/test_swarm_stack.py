"""The Swarm deployment on a one-node swarm of a private engine (see conftest.py):
`scripts/swarm.py up` (what `make swarm-up` runs after the build) makes the swarm and
deploys deploy/stack.yml with two balancers (ports 5000 and 5001), one leader and one
follower; a RINGLB_* setting set for it reaches both; replicas are services; the contract
holds through either published port; both route 10,000 keys alike; a write on the
follower takes effect once; `docker kill` of a replica's container is repaired under a
new name with no failed request; /rm removes services before it answers (also one whose
name Swarm refuses); `docker kill` of the leader or of the follower costs no request of a
client that retries on the other, the follower takes over within the lease time, no
replica is started or lost, and the killed one comes back as a follower; `swarm.py down`
leaves nothing, not even the swarm. One stack is shared by the module; tests run in file
order.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

import pytest
from swarmtest import BALANCERS, GENERATED, OWNER, PORT, SECOND, RequestLoop, SwarmStack

from faults.faultlib import Figures
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
    for port in BALANCERS:
        assert stack.replicas(port) == ["server_1", "server_2", "server_3"]
        assert stack.call("GET", "/policy", port=port).json()["message"]["name"] == "assignment"
    assert sorted(stack.roles().values()) == ["follower", "leader"]
    parts = [stack.balancer(port) for port in BALANCERS]
    assert parts[0]["leader"] == parts[1]["leader"] in {part["name"] for part in parts}
    for port, part in zip(BALANCERS, parts, strict=True):
        metrics = stack.call("GET", "/metrics", port=port).body.decode()
        leading = 1 if part["role"] == "leader" else 0
        assert f'ringlb_balancer_leader{{balancer="{part["name"]}"}} {leading}.0' in metrics
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


@pytest.mark.parametrize("port", [PORT, SECOND])
def test_contract_holds_through_each_balancers_port(stack: SwarmStack, port: int) -> None:
    stack.settled()  # the table's writes on the other balancer show here within a sync
    run_contract_checks(port, stack.host)


def test_both_balancers_send_10000_keys_to_the_same_replicas(stack: SwarmStack) -> None:
    keys = random.Random(13).sample(range(10**6), 10_000)
    assert len(stack.settled()) == 3
    follower = next(port for port, role in stack.roles().items() if role == "follower")
    for policy in ("assignment", "maglev", "ring", "rendezvous"):  # every hash policy
        if policy != "assignment":  # switched on the follower: the leader takes it
            reply = stack.call("PUT", "/policy", {"name": policy}, port=follower)
            assert reply.status == 200, reply.body
            for port in BALANCERS:
                described = stack.call("GET", "/policy", port=port).json()["message"]
                assert described["name"] == policy, port
        first, second = (stack.homes(port, keys) for port in BALANCERS)
        agreed = sum(a == b for a, b in zip(first, second, strict=True))
        print(f"swarm: {policy}: {agreed} of {len(keys)} keys to the same replica")
        assert agreed == len(keys)
        assert len(set(first)) == 3
    assert stack.call("PUT", "/policy", {"name": "assignment"}, port=follower).status == 200


def test_a_write_on_the_follower_takes_effect_once_for_the_cluster(stack: SwarmStack) -> None:
    roles = stack.roles()
    follower = next(port for port, role in roles.items() if role == "follower")
    leader = next(port for port, role in roles.items() if role == "leader")
    before = stack.settled()
    reply = stack.call("POST", "/add", {"n": 1, "hostnames": ["S7"]}, port=follower)
    assert reply.status == 200, reply.body
    assert reply.json()["message"]["replicas"] == [*before, "S7"]
    assert stack.replicas(follower) == stack.replicas(leader) == [*before, "S7"]
    assert sorted(stack.services()) == sorted([*before, "S7"])
    reply = stack.call("POST", "/add", {"n": 1, "hostnames": ["S7"]}, port=follower)
    assert reply.status == 400 and "S7" in reply.json()["message"]
    reply = stack.call("DELETE", "/rm", {"n": 1, "hostnames": ["S7"]}, port=follower)
    assert reply.status == 200, reply.body
    assert stack.replicas(follower) == stack.replicas(leader) == before
    assert sorted(stack.services()) == sorted(before)
    relayed = stack.balancer(follower)["relayed_writes"]
    assert relayed >= 3 and stack.balancer(leader)["relayed_writes"] == 0


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


@pytest.mark.parametrize("role", ["leader", "follower"])
def test_docker_kill_of_a_balancer_costs_no_request_and_it_comes_back_as_a_follower(
    stack: SwarmStack, role: str
) -> None:
    """The killed balancer's open connections are lost; the client retries those once on
    the other balancer. A killed leader's lease is taken over by the follower; the replicas
    stay as they are (same services: none started, none lost); Swarm restarts the killed
    balancer's task, and it joins as a follower (it adopts nothing: the services keep
    their ids)."""
    roles = stack.roles()
    victim = next(port for port, r in roles.items() if r == role)
    survivor = next(port for port in BALANCERS if port != victim)
    names = stack.settled()
    ids = {name: service["ID"] for name, service in stack.services().items()}
    container = stack.balancer_container(victim)
    takeover = None
    with RequestLoop(stack, ports=tuple(BALANCERS)) as load:
        killed = time.monotonic()
        stack.docker("kill", container)
        if role == "leader":
            wait_until(lambda: stack.balancer(survivor)["role"] == "leader", 30, interval=0.05)
            takeover = time.monotonic() - killed

        def back_as_follower() -> bool:
            try:
                if stack.balancer_container(victim) in ("", container):
                    return False
                return stack.balancer(victim)["role"] == "follower"
            except (OSError, ValueError, KeyError):
                return False

        wait_until(back_as_follower, 90, interval=0.2)
        back = time.monotonic() - killed
        wait_until(lambda: stack.replicas(victim) == names, 30, interval=0.1)
    figures = Figures(
        f"docker kill of the {role} balancer (of two)",
        runtime="swarm",
        requests=load.sent,
        client_errors=len(load.failures),
        detection_s=takeover,
        recovery_s=back,
        note=(
            f"{load.retried} request(s) refused or reset by the killed balancer, each sent "
            "again to the other once and answered there; "
            + (
                f"the follower took the lease over in {takeover:.2f} s (lease 3 s, renewed "
                "every 1 s); "
                if takeover is not None
                else "the leader kept the lease; "
            )
            + "recovery = the restarted balancer serving as a follower; the replicas' "
            "services unchanged (none started, none lost)."
        ),
    )
    figures.record()
    print(stack.balancer_log("leader", "follower", "lease", "took over"))
    assert load.failures == []
    assert stack.replicas(survivor) == names == stack.replicas(victim)
    assert {name: service["ID"] for name, service in stack.services().items()} == ids
    leader = stack.balancer(survivor if role == "leader" else victim)["leader"]
    assert stack.balancer(victim)["leader"] == stack.balancer(survivor)["leader"] == leader
    for port in BALANCERS:
        assert stack.call("GET", "/status", port=port).json()["message"]["target"] == len(names)


def test_down_leaves_nothing_and_leaves_the_swarm_it_made(stack: SwarmStack) -> None:
    started = time.monotonic()
    stack.swarm("down")
    print(f"swarm.py down on a private engine: {time.monotonic() - started:.1f} s")
    assert stack.docker("info", "--format", "{{.Swarm.LocalNodeState}}") == "inactive"
    assert stack.docker("ps", "-aq", "--filter", f"label=ringlb.owner={OWNER}") == ""
    networks = stack.docker("network", "ls", "--format", "{{.Name}}").split()
    assert sorted(networks) == ["host", "none"], "the engine is not as it was"
