"""`make bench`: ringlb, HAProxy, nginx, a featureless Python proxy and a replica direct,
under the same wrk load.

ringlb starts its three replica processes; HAProxy, nginx and `py-floor`
(bench/floor_proxy.py) are put in front of those same processes, and `direct` is wrk
against one replica. Targets alternate within each
round so a slow drift of the machine hits every target alike. For each run we read the
balancer's CPU time (utime + stime in /proc/<pid>/stat, balancer processes only) before
and after, and its peak RSS (VmHWM). Then the HTTPS rows (ringlb's TLS listener against
HAProxy's TLS termination) and the WebSocket rows (bench/tls_ws.py), then the
connection-scale run holds 10,000 keep-alive connections open on each balancer. Prints the
tables and writes bench/results/*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import procstat
import targets
import tls_ws
from wrk import WrkSettings, run_wrk

import ringlb as ringlb_package

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def measure(
    target: targets.Target, settings: WrkSettings, replicas: list[targets.ReplicaEndpoint]
) -> dict:
    """Runs wrk once against `target`; returns its figures, the balancer's CPU cost, and
    how the replicas' CPU time was split (a skewed split means one replica saturates first).
    """
    pids = target.pids()
    cpu_before = procstat.total_cpu_seconds(pids) if pids else None
    replica_before = [procstat.cpu_seconds(r.pid) for r in replicas]
    result = run_wrk(target.port, settings)
    run = {k: v for k, v in asdict(result).items() if k != "output"}
    if pids:
        cpu = procstat.total_cpu_seconds(pids) - cpu_before
        run["cpu_us_per_request"] = cpu * 1e6 / max(result.requests, 1)
        run["peak_rss_kib"] = procstat.total_memory_kib(pids)["VmHWM"]
    run["replica_cpu_seconds"] = {
        r.name: round(procstat.cpu_seconds(r.pid) - before, 2)
        for r, before in zip(replicas, replica_before, strict=True)
    }
    return run


def summarize(runs: list[dict]) -> dict:
    """Returns the median of each figure over the rounds (peak RSS: the maximum)."""
    summary = {}
    for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request"):
        values = [r[key] for r in runs if key in r]
        if values:
            summary[key] = statistics.median(values)
    rss = [r["peak_rss_kib"] for r in runs if "peak_rss_kib" in r]
    if rss:
        summary["peak_rss_mib"] = max(rss) / 1024
    summary["errors"] = sum(r["errors"] for r in runs)
    return summary


# Figures compared with HAProxy's (the targets), as ratios.
COMPARED = {
    "rps": "rps_vs_haproxy",
    "cpu_us_per_request": "cpu_vs_haproxy",
    "p99_ms": "p99_vs_haproxy",
}


def compare(runs: dict[str, list[dict]], summary: dict[str, dict]) -> None:
    """Adds to each summary the median over the rounds of its figure divided by HAProxy's in
    the same round: the machine's speed drifts between rounds much more than within one,
    so per-round ratios are steadier than a ratio of medians."""
    reference = runs.get("haproxy")
    if not reference:
        return
    for name, own in runs.items():
        for key, ratio in COMPARED.items():
            pairs = [
                (mine[key], theirs[key])
                for mine, theirs in zip(own, reference, strict=False)
                if mine.get(key) and theirs.get(key)
            ]
            if pairs:
                summary[name][ratio] = statistics.median(a / b for a, b in pairs)


def hold_connections(target: targets.Target, connections: int) -> dict:
    args = [sys.executable, str(HERE / "manyconn.py"), "--port", str(target.port)]
    args += ["--connections", str(connections)]
    for pid in target.pids():
        args += ["--pid", str(pid)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=240, check=False)
    if not out.stdout.strip():
        return {"errors": -1, "error_kinds": {"client failed": out.stderr[-2000:]}}
    return json.loads(out.stdout)


def table(summary: dict[str, dict], scale: dict[str, dict]) -> str:
    """Returns the results as a Markdown table (readable in a terminal as well)."""
    lines = [
        "| target | req/s | req/s vs HAProxy | p50 ms | p99 ms | p99 vs HAProxy | CPU µs/req "
        "| CPU vs HAProxy | peak RSS MiB | errors | 10k conns: errors | 10k conns: peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ratio(s: dict, key: str) -> str:
        return f"{s[key]:.2f} x" if key in s else "-"

    for name, s in summary.items():
        cpu = f"{s['cpu_us_per_request']:.0f}" if "cpu_us_per_request" in s else "-"
        rss = f"{s['peak_rss_mib']:.1f}" if "peak_rss_mib" in s else "-"
        held = scale.get(name)
        held_errors = str(held["errors"]) if held else "-"
        held_rss = "-"
        if held and held.get("memory_kib_after_round2"):
            held_rss = f"{held['memory_kib_after_round2']['VmHWM'] / 1024:.1f}"
        lines.append(
            f"| {name} | {s['rps']:.0f} | {ratio(s, 'rps_vs_haproxy')} | {s['p50_ms']:.2f} "
            f"| {s['p99_ms']:.2f} | {ratio(s, 'p99_vs_haproxy')} | {cpu} "
            f"| {ratio(s, 'cpu_vs_haproxy')} | {rss} | {s['errors']} | {held_errors} | {held_rss} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="plain HTTP rounds (0: skip)")
    parser.add_argument("--seconds", type=int, default=10, help="per wrk run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of wrk before round 1")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--hold", type=int, default=10_000, help="connection-scale run (0: skip)")
    parser.add_argument("--only", default="", help="comma-separated subset of targets")
    parser.add_argument(
        "--https-rounds", type=int, default=None, help="HTTPS rounds (default: --rounds; 0: skip)"
    )
    parser.add_argument("--ws-seconds", type=int, default=10, help="WebSocket echo (0: skip)")
    parser.add_argument("--ws-tunnels", type=int, default=1000, help="WebSocket tunnels held")
    parser.add_argument(
        "--report",
        metavar="JSON",
        help="print the table of a saved run (bench/results/*.json) and exit",
    )
    parser.add_argument(
        "--policy",
        default="round_robin",
        help="ringlb's policy; round_robin matches HAProxy's and nginx's `roundrobin`",
    )
    args = parser.parse_args()
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        summary = {name: summarize(r) for name, r in saved["runs"].items() if r}
        compare(saved["runs"], summary)
        if summary:
            print(table(summary, saved["connection_scale"]))
        if saved.get("https") or saved.get("websocket"):
            print(tls_ws.table(saved.get("https") or {}, saved.get("websocket") or {}))
        return 0
    settings = WrkSettings(args.connections, args.threads, args.seconds)

    started = time.time()
    # Other work on the machine skews wall-clock figures: record how busy it was.
    load_at_start = os.getloadavg()
    ringlb_build = ringlb_package.BUILD
    print(f"bench: load average at start {load_at_start}", flush=True)
    print(f"bench: ringlb's hot path: {ringlb_build}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="ringlb-bench-"))
    running: list[targets.Target] = []
    https_rounds = args.rounds if args.https_rounds is None else args.https_rounds
    https: dict[str, dict] = {}
    websocket: dict[str, dict] = {}
    try:
        cert, key, combined = tls_ws.certificate(workdir)
        tls_port = targets.free_port()
        tls_args = ["--tls-port", str(tls_port), "--tls-cert", str(cert), "--tls-key", str(key)]
        ringlb = targets.Ringlb(workdir, args.policy, tls_args)
        running.append(ringlb)
        haproxy = targets.Haproxy(workdir, ringlb.replicas)
        running.append(haproxy)
        running.append(targets.Nginx(workdir, ringlb.replicas))
        running.append(targets.PythonFloor(workdir, ringlb.replicas))
        if ringlb_build.startswith("compiled"):
            # The same source as plain Python, with replica processes of its own.
            running.append(targets.Ringlb(workdir, args.policy, name="ringlb-pure", pure=True))
        running.append(targets.Direct(ringlb.replicas[0]))
        chosen = [t for t in running if not args.only or t.name in args.only.split(",")]
        replicas = ", ".join(f"{r.name}:{r.port}" for r in ringlb.replicas)
        print(
            f"bench: ringlb policy {args.policy}; replicas {replicas}; work files in {workdir}",
            flush=True,
        )

        for target in chosen:
            print(f"bench: warm-up {target.name} ({args.warmup} s)", flush=True)
            run_wrk(target.port, settings, seconds=args.warmup)
        runs: dict[str, list[dict]] = {t.name: [] for t in chosen}
        for round_no in range(1, args.rounds + 1):
            for target in chosen:
                run = measure(target, settings, ringlb.replicas)
                runs[target.name].append(run)
                print(
                    f"bench: round {round_no} {target.name:8} {run['rps']:9.0f} req/s "
                    f"p50 {run['p50_ms']:.2f} ms p99 {run['p99_ms']:.2f} ms "
                    f"cpu {run.get('cpu_us_per_request', 0):.0f} µs/req errors {run['errors']} "
                    f"replica cpu s {list(run['replica_cpu_seconds'].values())}",
                    flush=True,
                )
        summary = {name: summarize(r) for name, r in runs.items() if r}  # none: --rounds 0
        compare(runs, summary)

        if https_rounds:
            haproxy_tls = targets.Haproxy(workdir, ringlb.replicas, tls_pem=combined)
            running.append(haproxy_tls)
            pair = [tls_ws.RinglbTls(ringlb, tls_port), haproxy_tls]
            https = tls_ws.compare_https(pair, settings, https_rounds, ringlb.replicas, measure)
        if args.ws_seconds:
            for target, tunnels in ((ringlb, args.ws_tunnels), (haproxy, 0)):
                print(f"bench: WebSocket echo through {target.name}", flush=True)
                websocket[target.name] = tls_ws.websocket(target, args.ws_seconds, tunnels)
                print(f"bench: {json.dumps(websocket[target.name])}", flush=True)

        scale: dict[str, dict] = {}
        if args.hold:
            for target in chosen:
                if target.held and target.pids():
                    print(f"bench: {args.hold} connections on {target.name}", flush=True)
                    scale[target.name] = hold_connections(target, args.hold)
                    print(f"bench: {json.dumps(scale[target.name])}", flush=True)
    finally:
        for target in reversed(running):
            target.stop()

    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": targets.machine(),
        "load_average_at_start": load_at_start,
        "ringlb_hot_path": ringlb_build,
        "versions": {name: targets.version(name) for name in ("haproxy", "nginx", "wrk")},
        "wrk": asdict(settings),
        "rounds": args.rounds,
        "ringlb_policy": args.policy,
        "balancing": "ringlb --policy as given; HAProxy `balance roundrobin`; nginx round-robin",
        "summary": summary,
        "runs": runs,
        "https": https,
        "websocket": websocket,
        "connection_scale": scale,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    for path in (RESULTS / f"bench-{stamp}.json", RESULTS / "latest.json"):
        path.write_text(json.dumps(report, indent=2) + "\n")
    if summary:
        print()
        print(table(summary, scale))
    if https or websocket:
        print()
        print(tls_ws.table(https, websocket))
    print(f"\nbench: wrote {RESULTS / f'bench-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
