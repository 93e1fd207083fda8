"""`ringlb analyze` end to end, small: it starts its own balancer, writes every output, and
every request it sent is accounted for (answered by a named replica, or counted failed)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REQUESTS = 300
CHARTS = [
    "a1_distribution.png",
    "a2_scaling.png",
    "a3_failure_timeline.png",
    "a4_hash_distribution.png",
    "a4_hash_scaling.png",
    "a4_remap.png",
]
DATA = [
    "results.json",
    "a1_counts.csv",
    "a2_scaling.csv",
    "a3_failure_requests.csv",
    "a4_variants.csv",
    "REPORT.md",
]


@pytest.fixture(scope="module")
def analysis(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("analysis")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ringlb",
            "analyze",
            "--out",
            str(out),
            "--requests",
            str(REQUESTS),
            "--n-max",
            "4",
            "--stream-rate",
            "150",
            "--stream-seconds",
            "4",
            "--kill-at",
            "1",
            "--compare",
            "ring=--policy ring",
            "--compare",
            "nope=--policy no-such-policy",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_every_output_is_written(analysis: Path) -> None:
    for name in CHARTS:
        assert (analysis / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    for name in DATA:
        assert (analysis / name).stat().st_size > 0, name


def test_counts_add_up_to_the_requests_sent(analysis: Path) -> None:
    res = json.loads((analysis / "results.json").read_text())
    a1 = res["a1"]
    assert a1["load"]["failed"] == 0
    assert sum(a1["counts"].values()) == REQUESTS
    assert list(a1["counts"]) == ["server_1", "server_2", "server_3"]
    assert set(res["a2"]["by_n"]) == {"2", "3", "4"}
    for n, run in res["a2"]["by_n"].items():
        assert run["load"]["failed"] == 0
        assert sum(run["counts"].values()) == REQUESTS
        assert len(run["counts"]) == int(n)
    with (analysis / "a2_scaling.csv").open() as handle:
        assert sum(int(row["requests"]) for row in csv.DictReader(handle)) == 3 * REQUESTS


def test_failure_experiment_recovers_without_client_errors(analysis: Path) -> None:
    failure = json.loads((analysis / "results.json").read_text())["a3_failure"]
    assert failure["client_errors"] == 0
    assert sum(failure["load"]["counts"].values()) == failure["load"]["sent"] == 600
    assert failure["victim"] not in failure["replicas_after"]
    assert failure["replacement"] in failure["replicas_after"]
    assert 0 <= failure["detection_s"] <= failure["replacement_serving_s"]


def test_endpoint_table_passes_and_live_matches_computed(analysis: Path) -> None:
    res = json.loads((analysis / "results.json").read_text())
    assert [c["case"] for c in res["a3_endpoints"] if not c["passed"]] == []
    for check in res["a4"]["live_vs_computed_assignment"].values():
        assert check["agree"] == check["compared"] == REQUESTS
    live = {v["name"]: v for v in res["a4"]["live"]}
    assert set(live) == {"assignment (spec)", "ring"}
    assert all(c["disagree"] == 0 for c in live["ring"]["live_vs_computed"].values())
    assert "nope" in res["a4"]["variants_unavailable"]
    report = (analysis / "REPORT.md").read_text()
    for chart in CHARTS:
        assert f"({chart})" in report
