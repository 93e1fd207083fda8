"""The HTTPS and WebSocket rows of `make bench` (bench/run.py).

HTTPS: ringlb's TLS listener and HAProxy's TLS termination, in front of the same replica
processes, with the same certificate (ECDSA P-256, made here by tests/certs.py), under the
same wrk load: keep-alive requests/s and CPU per request, then new connections
(`Connection: close` on every request, so each one is a full handshake): handshakes/s.
The two targets alternate within each round, and ratios are taken within a round.

WebSocket: bench/websocket.py through each balancer's plain port to the replicas' `/ws`
echo (HAProxy tunnels upgrades in http mode by itself): echo messages/s and CPU per
message, then 1,000 tunnels held on ringlb with its memory before and while held.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import targets
from wrk import WrkSettings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from certs import TestCA  # noqa: E402  (test support, shared with the test suite)


def certificate(workdir: Path) -> tuple[Path, Path, Path]:
    """Returns a certificate for 127.0.0.1, its key, and both in one PEM (HAProxy's form)."""
    issued = TestCA(workdir).issue("bench", "127.0.0.1", "localhost")
    combined = workdir / "bench-combined.pem"
    combined.write_bytes(issued.cert.read_bytes() + issued.key.read_bytes())
    return issued.cert, issued.key, combined


class RinglbTls(targets.Target):
    """The HTTPS listener of a running ringlb (same process as its plain listener)."""

    name = "ringlb-https"

    def __init__(self, ringlb: targets.Ringlb, port: int) -> None:
        self.ringlb = ringlb
        self.port = port

    def pids(self) -> list[int]:
        return self.ringlb.pids()


def compare_https(
    pair: list[targets.Target],
    settings: WrkSettings,
    rounds: int,
    replicas: list[targets.ReplicaEndpoint],
    measure: Callable[..., dict],
) -> dict[str, dict]:
    """Returns, per mode (keep-alive, new connections), each target's median figures and
    its ratios to HAProxy's taken within each round."""
    modes = {
        "keep-alive": replace(settings, scheme="https"),
        "new connections": replace(settings, scheme="https", new_connections=True),
    }
    results: dict[str, dict] = {}
    for mode, wrk in modes.items():
        runs: dict[str, list[dict]] = {t.name: [] for t in pair}
        for round_no in range(1, rounds + 1):
            for target in pair:
                run = measure(target, wrk, replicas)
                runs[target.name].append(run)
                print(
                    f"bench: https {mode} round {round_no} {target.name:13} "
                    f"{run['rps']:8.0f} req/s cpu {run.get('cpu_us_per_request', 0):.0f} µs/req "
                    f"errors {run['errors']}",
                    flush=True,
                )
        mine, theirs = runs["ringlb-https"], runs["haproxy-https"]
        results[mode] = {
            name: {
                "rps": statistics.median(r["rps"] for r in own),
                "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in own),
                "errors": sum(r["errors"] for r in own),
            }
            for name, own in runs.items()
        }
        results[mode]["ringlb-https"]["rps_vs_haproxy"] = statistics.median(
            a["rps"] / b["rps"] for a, b in zip(mine, theirs, strict=True)
        )
        results[mode]["ringlb-https"]["cpu_vs_haproxy"] = statistics.median(
            a["cpu_us_per_request"] / b["cpu_us_per_request"]
            for a, b in zip(mine, theirs, strict=True)
        )
    return results


def websocket(target: targets.Target, seconds: int, tunnels: int) -> dict:
    """Runs bench/websocket.py against `target`'s plain port; returns its figures."""
    args = [sys.executable, str(HERE / "websocket.py"), "--port", str(target.port)]
    args += ["--seconds", str(seconds), "--tunnels", str(tunnels)]
    for pid in target.pids():
        args += ["--pid", str(pid)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if not out.stdout.strip():
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout)


def table(https: dict[str, dict], ws: dict[str, dict]) -> str:
    """Returns the HTTPS and WebSocket figures as Markdown tables."""
    lines = []
    if https:
        lines += [
            "| HTTPS | target | req/s | req/s vs HAProxy | CPU µs/req | CPU vs HAProxy | errors |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
    for mode, by_target in https.items():
        for name, s in by_target.items():
            vs = f"{s['rps_vs_haproxy']:.2f} x" if "rps_vs_haproxy" in s else "-"
            cpu_vs = f"{s['cpu_vs_haproxy']:.2f} x" if "cpu_vs_haproxy" in s else "-"
            lines.append(
                f"| {mode} | {name} | {s['rps']:.0f} | {vs} | {s['cpu_us_per_request']:.0f} "
                f"| {cpu_vs} | {s['errors']} |"
            )
    if not ws:
        return "\n".join(lines)
    lines += [
        "",
        "| WebSocket | echo msg/s (1 KiB) | CPU µs/msg | errors | 1,000 tunnels: errors "
        "| RSS before -> holding MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, figures in ws.items():
        t = figures.get("throughput", {})
        s = figures.get("scale")
        held = f"{s['errors']}" if s else "-"
        rss = f"{s['rss_mib_before']} -> {s['rss_mib_holding']}" if s else "-"
        lines.append(
            f"| {name} | {t.get('messages_per_s', '-')} "
            f"| {t.get('balancer_cpu_us_per_message', '-')} | {t.get('errors', '-')} "
            f"| {held} | {rss} |"
        )
    return "\n".join(lines)
