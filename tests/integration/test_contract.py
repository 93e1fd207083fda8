"""The whole contract against a real `ringlb serve` with real replica processes."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator

import pytest
from contract_checks import HOME_RE, error_body, run_contract_checks

from lbtest import BalancerProcess, cmdline, replica_processes, request
from ringlb.model import Replica
from ringlb.policies.assignment import AssignmentPolicy


@pytest.fixture(scope="module")
def shared() -> Iterator[BalancerProcess]:
    balancer = BalancerProcess("--seed", "11", "--policy", "assignment")
    try:
        yield balancer.start()
    finally:
        balancer.cleanup()


def test_every_case_of_the_contract(shared: BalancerProcess) -> None:
    run_contract_checks(shared.port)


def test_the_same_request_id_reaches_the_same_replica(shared: BalancerProcess) -> None:
    for request_id in ("123456", "654321", "client-42"):
        seen = {
            request(shared.port, "GET", "/home", headers={"X-Request-ID": request_id}).body
            for _ in range(8)
        }
        assert len(seen) == 1, (request_id, seen)


def test_initial_replicas_are_server_1_to_3(shared: BalancerProcess) -> None:
    assert shared.get("/rep").body == (
        b'{"message":{"N":3,"replicas":["server_1","server_2","server_3"]},"status":"successful"}'
    )


def test_routing_follows_the_assignment_ring(start_balancer) -> None:
    """Each X-Request-ID lands where the specification's ring says (replica ids 1, 2, 3:
    a new balancer, since the contract's cases re-add replicas under new ids)."""
    shared = start_balancer("--policy", "assignment")
    ring = AssignmentPolicy().build([Replica(f"server_{i}", i, "", 0) for i in (1, 2, 3)])
    rng = random.Random(2024)
    ids = [rng.randint(100000, 999999) for _ in range(200)]
    seen = Counter()
    for i in ids:
        body = request(shared.port, "GET", "/home", headers={"X-Request-ID": str(i)}).body
        name = HOME_RE.match(body).group(1).decode()
        assert name == ring.pick(i).name, i
        seen[name] += 1
    assert sum(seen.values()) == len(ids)


def test_methods_other_than_get_are_proxied(shared: BalancerProcess) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        reply = request(shared.port, method, "/home", body=b"{}")
        # The replica serves only GET /home: its 404 becomes the contract's 400.
        assert reply.status == 400
        assert reply.body == error_body("'/home' endpoint does not exist in server replicas")
    head = request(shared.port, "HEAD", "/home")
    assert head.status == 200 and head.body == b""


def test_no_replicas_gives_503_then_recovers(start_balancer) -> None:
    balancer = start_balancer("--replicas", "1")
    reply = balancer.call("DELETE", "/rm", {"n": 1})
    assert reply.body == b'{"message":{"N":0,"replicas":[]},"status":"successful"}'
    for path in ("/home", "/anything"):
        reply = balancer.get(path)
        assert reply.status == 503
        assert reply.body == error_body("No replicas available")
    # The supervisor must not bring back what /rm removed: the target follows /rm.
    assert balancer.replicas() == []
    reply = balancer.call("POST", "/add", {"n": 1, "hostnames": ["server_1"]})
    assert json.loads(reply.body)["message"]["replicas"] == ["server_1"]
    assert balancer.get("/home").status == 200


# A replica command that exits at once for names starting with "broken": a real process
# that really fails to start.
FLAKY_REPLICA = (
    'sh -c \'case "$0" in broken*) exit 3;; esac; '
    'exec "$1" -m ringlb replica --id "$0" --host "$2" --port "$3"\' '
    "{name} {python} {host} {port}"
)


def test_failed_add_is_all_or_nothing(start_balancer) -> None:
    """A replica that cannot start makes /add answer 500 and leaves nothing behind."""
    balancer = start_balancer("--replica-command", FLAKY_REPLICA)
    before = balancer.get("/rep").body
    reply = balancer.call("POST", "/add", {"n": 3, "hostnames": ["fine_1", "broken_1"]})
    assert reply.status == 500
    assert reply.body == error_body(
        "Replica 'broken_1' failed to start: it exited before answering its heartbeat"
    )
    assert balancer.get("/rep").body == before
    running = {arg for pid in replica_processes(balancer.pid) for arg in cmdline(pid)}
    assert "fine_1" not in running, "replicas started by a failed /add must be stopped"
    # Nothing was reserved either: the same names are free for the next call.
    reply = balancer.call("POST", "/add", {"n": 1, "hostnames": ["fine_1"]})
    assert reply.status == 200
    assert balancer.replicas()[-1] == "fine_1"
