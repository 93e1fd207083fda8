"""The autoscaler under a real load ramp: up under load, back down after, no failed request,
no flapping (at most one change per cooldown)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

from lbtest import LoadLoop, wait_until

ECHO = Path(__file__).resolve().parent.parent / "echo_replica.py"


def test_replicas_follow_the_load_up_and_down(start_balancer) -> None:
    balancer = start_balancer(
        "--replica-command", f"{{python}} {ECHO} --id {{name}} --host {{host}} --port {{port}}",
        "--replicas", "1",
        "--autoscale", "true",
        "--autoscale-min", "1",
        "--autoscale-max", "4",
        "--autoscale-target-inflight", "2",
        "--autoscale-window", "1",
        "--autoscale-up-cooldown", "2",
        "--autoscale-down-cooldown", "2",
    )  # fmt: skip
    started = time.monotonic()
    timeline: list[tuple[float, int]] = []  # (seconds, replica count) at each change

    def count() -> int:
        n = len(balancer.replicas())
        if not timeline or timeline[-1][1] != n:
            timeline.append((time.monotonic() - started, n))
        return n

    count()
    with LoadLoop(balancer.port, path="/sleep/0.2", workers=8) as load:
        # 8 clients each keep one request in flight: 8 in flight / target 2 = 4 replicas.
        wait_until(lambda: count() == 4, 30)
        time.sleep(1)
    load_off = time.monotonic() - started
    wait_until(lambda: count() == 1, 40)
    assert load.failures == [], load.failures[:5]
    assert load.latencies, "no request was answered"
    # No flapping: every decision is at least a cooldown after the one before it.
    events = balancer.get("/status").json()["message"]["events"]
    stamps = sorted(e["time"] for e in events if e["kind"].startswith("scaled"))
    assert len(stamps) >= 2
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert all(gap >= 1.9 for gap in gaps), gaps
    kinds = [e["kind"] for e in events]
    ups, downs = kinds.count("scaled up"), kinds.count("scaled down")
    steps = ", ".join(f"{t:.1f} s: {n}" for t, n in timeline)
    print(
        f"\nautoscaler: load on at 0 s, off at {load_off:.1f} s; replicas {steps}; "
        f"{ups} up, {downs} down decisions; {load.sent} requests, 0 failed"
    )
    metrics = balancer.get("/metrics").body.decode()
    assert 'ringlb_autoscaler_decisions_total{direction="up"}' in metrics
