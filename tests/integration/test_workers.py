"""`--workers 2`: two data-plane processes on one port, one control process (real replica
processes): the whole contract, one replica per key whichever worker answers, changes seen
by every worker, a killed worker replaced, counters summed, nothing left after a signal."""

from __future__ import annotations

import os
import re
import signal

import pytest
from contract_checks import run_contract_checks

from lbtest import BalancerProcess, replica_processes, request, wait_until

WORKERS = ("--workers", "2", "--seed", "7")


def status(balancer: BalancerProcess) -> dict:
    return balancer.get("/status").json()["message"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def answer_status(balancer: BalancerProcess, path: str = "/home") -> int:
    """Returns the status of `GET path`, or 0 when the connection failed."""
    try:
        return balancer.get(path).status
    except OSError:
        return 0


def served_by(reply) -> str:
    return reply.json()["message"].rsplit(" ", 1)[-1]


@pytest.fixture(scope="module")
def balancer():
    balancer = BalancerProcess(*WORKERS).start()
    yield balancer
    balancer.cleanup()


def test_the_contract_holds_on_the_port_of_two_workers(balancer: BalancerProcess) -> None:
    run_contract_checks(balancer.port)


def test_a_key_goes_to_one_replica_whichever_worker_answers(balancer: BalancerProcess) -> None:
    before = {w["index"]: w["answered"] for w in status(balancer)["workers"]}
    for key in ("123456", "654321", "client-7"):
        # A new connection each time: the kernel spreads them over both workers.
        names = {
            served_by(request(balancer.port, "GET", "/home", headers={"X-Request-ID": key}))
            for _ in range(30)
        }
        assert len(names) == 1, (key, names)
    workers = status(balancer)["workers"]
    assert len(workers) == 2
    assert all(w["answered"] > before[w["index"]] for w in workers), workers  # both answered


def test_metrics_and_status_add_up_every_worker(balancer: BalancerProcess) -> None:
    def total() -> int:
        text = balancer.get("/metrics").body.decode()
        return sum(
            int(float(v)) for v in re.findall(r"^ringlb_requests_total\{[^}]*\} (\S+)$", text, re.M)
        )

    first = total()
    for _ in range(40):
        assert balancer.get("/home").status == 200
    assert total() == first + 40
    message = status(balancer)
    assert sum(r["answered"] for r in message["replicas"]) == sum(
        w["answered"] for w in message["workers"]
    )


def test_an_add_reaches_every_worker_before_it_answers(balancer: BalancerProcess) -> None:
    taken = {w["index"]: w["tables_taken"] for w in status(balancer)["workers"]}
    reply = balancer.call("POST", "/add", {"n": 1, "hostnames": ["W1"]})
    assert reply.status == 200, reply.body
    workers = status(balancer)["workers"]
    # The default policy is maglev: the control process built the table, the workers took it.
    assert all(w["tables_taken"] == taken[w["index"]] + 1 for w in workers), (taken, workers)
    versions = {w["version"] for w in workers}
    print(
        f"\n/add reached the workers in {[w['reach_ms'] for w in workers]} ms, "
        f"their complete tables in {[w['propagation_ms'] for w in workers]} ms"
    )
    assert len(versions) == 1  # /add answered once every worker had built it

    def reaches_w1() -> bool:
        return any(served_by(balancer.get("/home")) == "W1" for _ in range(40))

    wait_until(reaches_w1, 10)
    for key in ("123456", "654321", "client-7", "client-8"):  # on the tables taken
        names = {
            served_by(request(balancer.port, "GET", "/home", headers={"X-Request-ID": key}))
            for _ in range(20)
        }
        assert len(names) == 1, (key, names)
    assert balancer.call("DELETE", "/rm", {"hostnames": ["W1"]}).status == 200
    assert "W1" not in balancer.replicas()


def test_a_killed_worker_is_replaced_and_the_other_serves_meanwhile(
    balancer: BalancerProcess,
) -> None:
    [victim, other] = status(balancer)["workers"]
    os.kill(victim["pid"], signal.SIGKILL)
    # Meanwhile new connections go to the other worker's socket.
    answers = [answer_status(balancer) for _ in range(20)]
    print(f"\nanswers right after kill -9 of a worker: {answers}")
    assert answers.count(200) >= 18, answers  # a connection queued on the dead one may fail

    def replaced() -> list[dict] | None:
        if answer_status(balancer, "/status") != 200:
            return None
        workers = status(balancer)["workers"]
        pids = {w["pid"] for w in workers if w["serving"]}
        return workers if len(pids) == 2 and victim["pid"] not in pids else None

    workers = wait_until(replaced, 20)
    assert other["pid"] in {w["pid"] for w in workers}
    assert all(balancer.get("/home").status == 200 for _ in range(10))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_leaves_no_worker_and_no_replica(sig: int) -> None:
    balancer = BalancerProcess(*WORKERS)
    try:
        balancer.start()
        workers = [w["pid"] for w in status(balancer)["workers"]]
        assert len(workers) == 2 and len(replica_processes(balancer.pid)) == 3
        assert balancer.stop(sig) == 0
        assert replica_processes(balancer.pid) == []
        assert not any(alive(pid) for pid in workers)
    finally:
        balancer.cleanup()


def test_a_dead_replica_leaves_every_worker(balancer: BalancerProcess) -> None:
    """kill -9 of a replica: whichever worker meets it first ejects it; the control plane
    tells the other; clients see no error."""
    from lbtest import pid_of_replica

    name = balancer.replicas()[0]
    os.kill(pid_of_replica(balancer.pid, name), signal.SIGKILL)
    answers = [balancer.get("/home").status for _ in range(60)]
    assert answers == [200] * 60
    wait_until(lambda: name not in balancer.replicas() and len(balancer.replicas()) == 3, 20)


def test_the_admin_token_is_checked_whichever_worker_relays(start_balancer) -> None:
    balancer = start_balancer(*WORKERS, "--admin-token", "s3cret", "--replicas", "1")
    payload = {"n": 0}
    for _ in range(6):  # new connections: both workers relay
        assert balancer.call("POST", "/add", payload).status == 401
    good = {"Authorization": "Bearer s3cret"}
    assert balancer.call("POST", "/add", payload, headers=good).status == 200
    assert balancer.get("/rep").status == 200
