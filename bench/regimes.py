"""`make bench`, second part: the regimes of issue 14, each ringlb against HAProxy set up the
same way, then the event-loop stall of a membership change under load.

Regimes: wrk with 1 and with 2 threads; round robin, and the policy a user gets by default
(`maglev` on the request key; wrk sends a random 6-digit X-Request-ID per request, HAProxy
hashes the same header with `hash-type consistent`); ringlb with one worker against HAProxy
`nbthread 1`, and ringlb `--workers auto` against HAProxy's default threads. Each pair
alternates within every round over the same replica processes; ratios are per round, then
the median (as in bench/run.py). The stall comes from bench/stall.py, with the one-shot
build of before issue 14 and the sliced build of now; the time a change takes to reach the
workers from bench/propagation.py. Writes bench/results/regimes-*.json.

    .venv/bin/python bench/regimes.py [--rounds 2] [--seconds 6] [--skip-stall]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import targets
from run import compare, measure, summarize
from wrk import WrkSettings, run_wrk

import ringlb as ringlb_package

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RANDOM_KEY = str(HERE / "random_key.lua")

POLICIES = {
    # ringlb policy -> (HAProxy balance lines, wrk script)
    "round_robin": (("balance roundrobin",), None),
    "maglev": (("balance hdr(X-Request-ID)", "hash-type consistent"), RANDOM_KEY),
}


def set_policy(port: int, name: str) -> None:
    body = json.dumps({"name": name}).encode()
    put = urllib.request.Request(f"http://127.0.0.1:{port}/policy", body, method="PUT")
    with urllib.request.urlopen(put, timeout=30) as answer:
        assert answer.status == 200


def run_pair(pair: list[targets.Target], settings: WrkSettings, rounds: int, warmup: int):
    """Runs wrk on each target in turn, `rounds` times; returns the summary with ratios."""
    ringlb = pair[0]
    for target in pair:
        run_wrk(target.port, settings, seconds=warmup)
    runs: dict[str, list[dict]] = {"ringlb": [], "haproxy": []}
    for _ in range(rounds):
        for key, target in zip(("ringlb", "haproxy"), pair, strict=True):
            runs[key].append(measure(target, settings, ringlb.replicas))  # type: ignore[attr-defined]
    summary = {name: summarize(r) for name, r in runs.items()}
    compare(runs, summary)
    return runs, summary


def figures(script: str, *args: str) -> dict:
    """Runs bench/`script` (stall.py, propagation.py); returns the JSON it prints."""
    command = [sys.executable, str(HERE / script), *args]
    out = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": out.stderr[-2000:]}


def regime_table(rows: list[dict]) -> str:
    lines = [
        "| wrk threads | policy | ringlb | HAProxy | ringlb req/s | HAProxy req/s | req/s ratio "
        "| CPU µs/req ringlb | CPU µs/req HAProxy | CPU ratio | p99 ms ringlb | p99 ms HAProxy "
        "| p99 ratio | errors |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        mine, theirs = row["summary"]["ringlb"], row["summary"]["haproxy"]
        cells = [
            row["threads"],
            row["policy"],
            row["ringlb"],
            row["haproxy"],
            f"{mine['rps']:.0f}",
            f"{theirs['rps']:.0f}",
            f"{mine.get('rps_vs_haproxy', 0):.2f} x",
            f"{mine.get('cpu_us_per_request', 0):.0f}",
            f"{theirs.get('cpu_us_per_request', 0):.0f}",
            f"{mine.get('cpu_vs_haproxy', 0):.2f} x",
            f"{mine['p99_ms']:.2f}",
            f"{theirs['p99_ms']:.2f}",
            f"{mine.get('p99_vs_haproxy', 0):.2f} x",
            mine["errors"] + theirs["errors"],
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def stall_table(stalls: list[dict]) -> str:
    lines = [
        "| table build | policy | changes | CPU of the longest build turn, max (ms) | same, "
        "median over changes (ms) | largest lag during a change (ms) | median of each "
        "change's largest lag (ms) | largest lag while a replica starts (ms) | largest lag "
        "otherwise (ms) | p99 lag otherwise (ms) | change to complete table, median (ms) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in stalls:
        if "error" in s:
            lines.append(f"| failed: {s['error'][-200:]!r} | | | | | | | | | | |")
            continue
        lines.append(
            f"| {s['build']} | {s['policy']} | {s['changes']} | {s['build_turn_cpu_max_ms']} "
            f"| {s['build_turn_cpu_median_ms']} | {s['stall_max_ms']} "
            f"| {s['stall_median_of_window_max_ms']} | {s.get('start_lag_max_ms', '')} "
            f"| {s['lag_max_outside_ms']} "
            f"| {s['lag_p99_outside_ms']} | {s['change_to_complete_table_median_ms']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=6, help="per wrk run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--skip-stall", action="store_true")
    args = parser.parse_args()
    started = time.time()
    load_at_start = os.getloadavg()
    print(f"regimes: load average at start {load_at_start}", flush=True)
    # A source edited after the build runs as plain Python: say which one this run measures.
    print(f"regimes: ringlb's hot path: {ringlb_package.BUILD}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="ringlb-regimes-"))
    running: list[targets.Target] = []
    rows: list[dict] = []
    try:
        one = targets.Ringlb(workdir, "round_robin", workers="1", name="ringlb-1")
        running.append(one)
        auto = targets.Ringlb(workdir, "round_robin", workers="auto", name="ringlb-auto")
        running.append(auto)
        haproxies: dict[tuple[str, str], targets.Haproxy] = {}
        for policy, (balance, _) in POLICIES.items():
            for mode, ringlb, threads in (("1", one, 1), ("auto", auto, None)):
                name = f"haproxy-{policy}-{mode}"
                proxy = targets.Haproxy(
                    workdir, ringlb.replicas, threads=threads, balance=balance, name=name
                )
                haproxies[(policy, mode)] = proxy
                running.append(proxy)
        for threads in (1, 2):
            for policy, (_, script) in POLICIES.items():
                settings = WrkSettings(args.connections, threads, args.seconds, script=script)
                for mode, ringlb, reference in (
                    ("1", one, "nbthread 1"),
                    ("auto", auto, "default threads"),
                ):
                    set_policy(ringlb.port, policy)
                    pair = [ringlb, haproxies[(policy, mode)]]
                    runs, summary = run_pair(pair, settings, args.rounds, args.warmup)
                    row = {
                        "threads": threads,
                        "policy": policy,
                        "ringlb": "1 worker" if mode == "1" else "--workers auto",
                        "haproxy": reference,
                        "summary": summary,
                        "runs": runs,
                    }
                    rows.append(row)
                    mine, theirs = summary["ringlb"], summary["haproxy"]
                    print(
                        f"regimes: wrk -t{threads} {policy:11} ringlb {row['ringlb']:14} "
                        f"{mine['rps']:7.0f} req/s {mine.get('cpu_us_per_request', 0):4.0f} µs "
                        f"p99 {mine['p99_ms']:6.2f} | HAProxy {reference:15} {theirs['rps']:7.0f} "
                        f"req/s {theirs.get('cpu_us_per_request', 0):4.0f} µs "
                        f"p99 {theirs['p99_ms']:6.2f} | ratio {mine.get('rps_vs_haproxy', 0):.2f}",
                        flush=True,
                    )
    finally:
        for target in reversed(running):
            target.stop()
    stalls = []
    propagation: dict = {}
    if not args.skip_stall:
        for extra in (["--one-shot"], []):
            result = figures("stall.py", "--seconds", "12", *extra)
            print(f"regimes: stall {json.dumps(result)}", flush=True)
            stalls.append(result)
        propagation = figures("propagation.py", "--workers", "auto")
        print(f"regimes: propagation {json.dumps(propagation)}", flush=True)
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": targets.machine(),
        "load_average_at_start": load_at_start,
        "ringlb_hot_path": ringlb_package.BUILD,
        "versions": {name: targets.version(name) for name in ("haproxy", "wrk")},
        "rounds": args.rounds,
        "seconds": args.seconds,
        "connections": args.connections,
        "regimes": rows,
        "stall": stalls,
        "propagation": propagation,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    for path in (RESULTS / f"regimes-{stamp}.json", RESULTS / "regimes-latest.json"):
        path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(regime_table(rows))
    if stalls:
        print()
        print(stall_table(stalls))
    if propagation and "error" not in propagation:
        print(
            f"\nA change reached every worker in {propagation['reach_ms_median']} ms (median; "
            f"max {propagation['reach_ms_max']}), their complete tables in "
            f"{propagation['propagation_ms_median']} ms (median; max "
            f"{propagation['propagation_ms_max']})"
        )
    print(f"\nregimes: wrote {RESULTS / f'regimes-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
