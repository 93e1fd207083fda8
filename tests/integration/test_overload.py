"""Overload and outliers: bounded queues answered 503 + Retry-After, bad replicas ejected."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lbtest import BalancerProcess, request

ECHO = Path(__file__).resolve().parent.parent / "echo_replica.py"
FAULTY = ECHO.with_name("faulty_replica.py")
# Replicas named bad* answer 500 to everything but their heartbeat.
ECHO_WITH_BAD = (
    'sh -c \'case "$0" in bad*) f=error:500;; *) f=none;; esac; '
    f'exec "$1" {FAULTY} --id "$0" --host "$2" --port "$3" --fault "$f"\' '
    "{name} {python} {host} {port}"
)


def concurrently(port: int, paths: list[str]) -> list[tuple[int, dict[str, str], dict]]:
    def one(path: str) -> tuple[int, dict[str, str], dict]:
        reply = request(port, "GET", path)
        body = json.loads(reply.body) if reply.body.startswith(b"{") else {}
        return reply.status, reply.headers, body

    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(one, paths))


def test_a_replica_answering_500s_is_ejected_but_never_the_last(start_balancer) -> None:
    balancer = start_balancer(
        "--replica-command",
        ECHO_WITH_BAD,
        "--hostnames",
        "good_1,good_2,bad_1",
        "--policy",
        "round_robin",
        "--outlier-consecutive-errors",
        "3",
        "--outlier-ejection-time",
        "60",
    )
    statuses = [balancer.get("/echo").status for _ in range(30)]
    assert statuses.count(500) == 3, statuses  # bad_1's three in a row, then it is out
    assert "bad_1" not in balancer.replicas()
    assert all(balancer.get("/echo").status == 200 for _ in range(10))


def test_the_last_serving_replica_is_never_ejected(start_balancer) -> None:
    balancer = start_balancer(
        "--replica-command",
        ECHO_WITH_BAD,
        "--hostnames",
        "bad_only",
        "--replicas",
        "1",
        "--outlier-consecutive-errors",
        "2",
    )
    statuses = [balancer.get("/echo").status for _ in range(6)]
    assert statuses == [500] * 6, "a failing replica is better than none"
    assert balancer.replicas() == ["bad_only"]


def test_a_full_replica_queue_answers_503_with_retry_after(start_balancer) -> None:
    balancer = start_balancer(
        "--replica-command",
        f"{{python}} {ECHO} --id {{name}} --host {{host}} --port {{port}}",
        "--replicas",
        "1",
        "--upstream-pool-size",
        "1",
        "--queue-size",
        "1",
    )
    results = concurrently(balancer.port, ["/sleep/2"] * 4)
    served = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(served) == 2 and len(refused) == 2, [r[0] for r in results]
    for _, headers, body in refused:
        assert headers["retry-after"] == "1"
        assert body["message"] == (
            "<Error> Overloaded: replica 'server_1': 1 requests already wait for this "
            "replica; retry later"
        )
    assert "server_1" in balancer.replicas(), "overload is not the replica's fault"


def test_total_inflight_cap(start_balancer) -> None:
    balancer = start_balancer(
        "--replica-command",
        f"{{python}} {ECHO} --id {{name}} --host {{host}} --port {{port}}",
        "--max-inflight",
        "2",
    )
    results = concurrently(balancer.port, ["/sleep/2"] * 3)
    assert sorted(r[0] for r in results) == [200, 200, 503]
    refused = next(r for r in results if r[0] == 503)
    assert refused[2]["message"] == "<Error> Overloaded: 2 requests in flight; retry later"


def test_client_connection_cap(start_balancer) -> None:
    balancer: BalancerProcess = start_balancer("--max-connections", "2")
    held = [socket.create_connection(("127.0.0.1", balancer.port)) for _ in range(2)]
    try:
        extra = socket.create_connection(("127.0.0.1", balancer.port), timeout=10)
        answer = b""
        while chunk := extra.recv(4096):
            answer += chunk
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"Retry-After: 1" in answer
        assert answer.endswith(
            b'{"message":"<Error> Too many connections; retry later","status":"failure"}'
        )
    finally:
        for sock in held:
            sock.close()


def test_retry_on_5xx_hides_a_failing_replica_from_idempotent_requests(start_balancer) -> None:
    balancer = start_balancer(
        "--replica-command",
        ECHO_WITH_BAD,
        "--hostnames",
        "good_1,good_2,bad_1",
        "--policy",
        "round_robin",
        "--retry-on-5xx",
        "true",
        "--outlier-consecutive-errors",
        "0",
    )
    assert [balancer.get("/echo").status for _ in range(30)] == [200] * 30
    assert "bad_1" in balancer.replicas(), "outlier ejection is off here"
    # A POST is not idempotent: the failing replica's answer reaches the client.
    posts = [balancer.call("POST", "/echo", {"n": i}).status for i in range(6)]
    assert posts.count(500) == 2 and posts.count(200) == 4, posts
