"""Metrics, the status endpoint and structured logs, on a real balancer with real replicas."""

from __future__ import annotations

import json
import os
import re
import signal

from prometheus_client.parser import text_string_to_metric_families

from lbtest import BalancerProcess, pid_of_replica, wait_until


def scrape(balancer: BalancerProcess) -> dict[str, list]:
    """Returns the samples of /metrics by metric family name."""
    reply = balancer.get("/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {f.name: f.samples for f in text_string_to_metric_families(reply.body.decode())}


def total(samples: list, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def status(balancer: BalancerProcess) -> dict:
    reply = balancer.get("/status")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["status"] == "successful"
    return body["message"]


def test_metrics_parse_and_count_the_traffic_that_flows(start_balancer) -> None:
    balancer = start_balancer("--seed", "7", "--log-format", "json", "--access-log-sample", "1")
    before = scrape(balancer)
    for i in range(30):
        assert balancer.get("/home", headers={"X-Request-ID": str(100000 + i)}).status == 200
    for _ in range(5):
        assert balancer.get("/nope").status == 400  # a replica's 404, relayed as the contract's 400
    after = scrape(balancer)

    requests = after["ringlb_requests"]
    moved_2xx = total(requests, "ringlb_requests_total", code="2xx") - total(
        before["ringlb_requests"], "ringlb_requests_total", code="2xx"
    )
    assert moved_2xx == 30
    assert total(requests, "ringlb_requests_total", code="4xx") == 5
    assert {s.labels["replica"] for s in requests} <= {"server_1", "server_2", "server_3"}
    latency = after["ringlb_upstream_latency_seconds"]
    assert total(latency, "ringlb_upstream_latency_seconds_count") == total(
        requests, "ringlb_requests_total"
    )
    idle = {s.labels["replica"] for s in after["ringlb_inflight_requests"] if s.value == 0}
    assert idle == {"server_1", "server_2", "server_3"}
    assert total(after["ringlb_replicas_target"], "ringlb_replicas_target") == 3
    assert total(after["ringlb_replicas_serving"], "ringlb_replicas_serving") == 3
    size = total(after["ringlb_ring_size"], "ringlb_ring_size")
    assert size == 65537  # maglev's table: every entry owned by someone
    assert total(after["ringlb_ring_slots"], "ringlb_ring_slots") == size
    assert abs(total(after["ringlb_ring_share"], "ringlb_ring_share") - 1) < 1e-9
    for family in ("ringlb_retries", "ringlb_ejections", "ringlb_respawns"):
        assert total(after[family], family + "_total") == 0

    # Every log line is one JSON object; the access log has one line per proxied answer.
    lines = [json.loads(line) for line in balancer.log().splitlines() if line.strip()]
    access = [fields for fields in lines if fields["logger"] == "ringlb.access"]
    assert len(access) == 35
    assert {a["status"] for a in access} == {200, 404}  # the replica's own status
    assert all(a["method"] == "GET" and a["replica"].startswith("server_") for a in access)
    assert any(fields["msg"].startswith("ringlb listening") for fields in lines)


LOGFMT_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s|$)')


def parse_logfmt(line: str) -> dict[str, str]:
    """Returns the key/value pairs of a logfmt line; asserts the whole line is pairs."""
    pairs, position = {}, 0
    while position < len(line):
        match = LOGFMT_PAIR.match(line, position)
        assert match, f"not logfmt at {position}: {line!r}"
        value = match.group(2)
        pairs[match.group(1)] = json.loads(value) if value.startswith('"') else value
        position = match.end()
    return pairs


def test_logfmt_lines_parse_and_the_access_log_samples(start_balancer) -> None:
    balancer = start_balancer("--seed", "3", "--log-format", "logfmt", "--access-log-sample", "0.5")
    for _ in range(200):
        assert balancer.get("/home").status == 200
    lines = [parse_logfmt(line) for line in balancer.log().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(pairs) for pairs in lines)
    access = [pairs for pairs in lines if pairs["logger"] == "ringlb.access"]
    # A fixed seed makes the draw exact; the bounds say what matters: about half.
    assert 60 <= len(access) <= 140
    assert all(a["path"] == "/home" and a["status"] == "200" for a in access)


def test_status_shows_replicas_events_and_repairs(balancer: BalancerProcess) -> None:
    assert "ringlb.access" not in balancer.log()  # access log is off by default
    first = status(balancer)
    assert [r["name"] for r in first["replicas"]] == ["server_1", "server_2", "server_3"]
    assert {r["state"] for r in first["replicas"]} == {"serving"}
    assert first["target"] == 3 and first["serving"] == 3
    assert first["ring"]["size"] == 65537 and first["ring"]["points"]
    assert [(e["kind"], e["replica"]) for e in first["events"]][:3] == [
        ("joined", "server_3"),
        ("joined", "server_2"),
        ("joined", "server_1"),
    ]

    assert balancer.call("POST", "/add", {"n": 1, "hostnames": ["S4"]}).status == 200
    assert balancer.call("DELETE", "/rm", {"n": 1, "hostnames": ["S4"]}).status == 200
    os.kill(pid_of_replica(balancer.pid, "server_2"), signal.SIGKILL)
    wait_until(lambda: status(balancer)["counters"]["respawns"] == 1, 15)

    kinds = [(e["kind"], e["replica"]) for e in reversed(status(balancer)["events"])]
    assert ("joined", "S4") in kinds and ("removed", "S4") in kinds
    assert kinds.index(("joined", "S4")) < kinds.index(("removed", "S4"))
    assert ("down", "server_2") in kinds
    respawned = [e for e in status(balancer)["events"] if e["kind"] == "respawned"]
    assert len(respawned) == 1 and respawned[0]["detail"] == "replaces server_2"
    metrics = scrape(balancer)
    assert total(metrics["ringlb_respawns"], "ringlb_respawns_total") == 1
    assert total(metrics["ringlb_replica_deaths"], "ringlb_replica_deaths_total") == 1


def test_the_heap_start_up_built_is_kept_out_of_the_collectors_walks(
    balancer: BalancerProcess,
) -> None:
    # A full collection over the start-up heap (modules, classes, the first tables) would
    # hold the event loop 6 to 13 ms; frozen, it is not walked (ringlb.memory).
    for _ in range(20):
        assert balancer.get("/home").status == 200
    metrics = scrape(balancer)
    assert total(metrics["ringlb_gc_frozen_objects"], "ringlb_gc_frozen_objects") > 10_000
    assert total(metrics["python_gc_collections"], "python_gc_collections_total") > 0
