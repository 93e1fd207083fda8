"""`ringlb analyze`: runs A-1..A-4 against one balancer and writes charts, data and report.

Without `--url` it starts its own `ringlb serve --policy assignment` (process runtime, a
free loopback port, a fixed seed), and stops it and its replicas at the end, also on error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ringlb.analysis import distribution, endpoints, failure, hashes, report, scaling
from ringlb.analysis.client import LoadClient, request_ids
from ringlb.analysis.options import DEFAULT_COMPARE
from ringlb.analysis.target import LocalBalancer, Target
from ringlb.policies import make_policy


@dataclass
class Analysis:
    """Everything one run measured: `results` is what results.json and REPORT.md show."""

    options: argparse.Namespace
    results: dict[str, Any] = field(default_factory=dict)
    a1: distribution.DistributionResult | None = None
    a2: scaling.ScalingResult | None = None
    a3: failure.FailureResult | None = None
    variants: list[hashes.VariantResult] = field(default_factory=list)


def main(options: argparse.Namespace) -> int:
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        analysis = asyncio.run(run(options))
    except KeyboardInterrupt:
        return 130
    written = write_outputs(analysis, out)
    print(f"analysis written to {out}: " + ", ".join(p.name for p in written))
    res = analysis.results
    failed = res["a1"]["load"]["failed"]
    failed += sum(r["load"]["failed"] for r in res["a2"]["by_n"].values())
    if failed:
        print(f"{failed} request(s) failed in A-1/A-2; see results.json", file=sys.stderr)
    return 1 if failed else 0


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Prints how long the block took, so a slow step is visible."""
    started = time.monotonic()
    yield
    print(f"[{name}: {time.monotonic() - started:.1f} s]", file=sys.stderr)


def start_target(options: argparse.Namespace) -> Target:
    if options.url:
        return Target(options.url, f"running balancer at {options.url}")
    print("starting ringlb serve --policy assignment (process runtime) ...", file=sys.stderr)
    return LocalBalancer(
        ["--policy", "assignment", "--seed", str(options.seed), "--log-level", "WARNING"]
    )


async def ensure_count(client: LoadClient, n: int) -> list[str]:
    """Brings the set to `n` replicas (removes the newest, adds server_<k>); returns it."""
    replicas = await client.replicas()
    while len(replicas) > n:
        replicas = await client.change("/rm", 1, [replicas[-1]])
    if len(replicas) < n:
        replicas = await client.change(
            "/add", n - len(replicas), scaling.new_names(replicas, n - len(replicas))
        )
    return replicas


async def run(options: argparse.Namespace) -> Analysis:
    analysis = Analysis(options)
    res = analysis.results
    keys = request_ids(options.requests, options.seed)
    n_values = list(range(options.n_min, options.n_max + 1))
    with phase("start"):
        target = await asyncio.to_thread(start_target, options)
    try:
        async with LoadClient(target.url, options.concurrency) as client:
            await ensure_count(client, 3)
            with phase("A-1"):
                a1 = await distribution.run(client, keys)
            with phase("A-2"):
                a2 = await scaling.run(client, keys, n_values)
                await ensure_count(client, 3)
            with phase("A-3 endpoints"):
                checks = await endpoints.run(client)
            busiest = max(a1.stats.counts, key=a1.stats.counts.__getitem__)
            stream_keys = request_ids(
                int(options.stream_rate * options.stream_seconds), options.seed + 1
            )
            with phase("A-3 failure"):
                try:
                    a3 = await failure.run(
                        client,
                        target,
                        stream_keys,
                        rate=options.stream_rate,
                        kill_at=options.kill_at,
                        victim=busiest,
                    )
                except LookupError as exc:
                    a3 = None
                    res["a3_failure"] = {"skipped": f"cannot kill a replica here: {exc}"}
                    print(f"A-3 failure experiment skipped: {exc}", file=sys.stderr)
    finally:
        if isinstance(target, LocalBalancer):
            res["balancer_warnings"] = target.warnings()
        await asyncio.to_thread(target.close)
    res["target"] = target.description
    res["settings"] = {k: v for k, v in vars(options).items() if k != "func"}
    res["a1"] = a1.as_dict()
    res["a2"] = a2.as_dict()
    res["a3_endpoints"] = [c.as_dict() for c in checks]
    if a3 is not None:
        res["a3_failure"] = a3.as_dict()
    analysis.a1, analysis.a2, analysis.a3 = a1, a2, a3

    # A-4, computed on the same ids with the ring ids a fresh balancer gives (1..N).
    join = a2.join_order
    computed = [hashes.compute(v, join, keys, n_values) for v in hashes.VARIANTS]
    spec_at = hashes.ring_assigner(hashes.VARIANTS[0], join)
    checks_live = {"N=3 (A-1)": hashes.agreement(a1.answered(), spec_at(3))}
    for n, r in a2.by_n.items():
        checks_live[f"N={n} (A-2)"] = hashes.agreement(r.answered(), spec_at(n))
    if options.url:
        live_name, live_about = "balancer under test", f"{options.url} (policy unknown here)"
    else:
        live_name, live_about = "assignment (spec)", target.description
    live = [live_result(live_name, live_about, a2, keys, n_values)]
    res["a4"] = {
        "computed": [r.as_dict() for r in computed],
        "live": [r.as_dict() for r in live],
        "live_vs_computed_assignment": checks_live,
        "spec_facts": hashes.spec_facts(keys, options.n_max),
        "variants_unavailable": {},
    }
    if not options.url:
        await compare_live(options, keys, n_values, res["a4"], live)
    analysis.variants = [computed[0], live[0], *computed[1:], *live[1:]]
    return analysis


def live_result(
    name: str, description: str, a2: scaling.ScalingResult, keys: Sequence[int], n_values: list[int]
) -> hashes.VariantResult:
    """Returns a live A-2 run as a variant: its distributions and live remap fractions."""
    by_n = {n: r.stats for n, r in a2.by_n.items()}
    remap = {}
    for n in n_values[:-1]:
        # Both runs sent the same ids in the same order: compare request by request.
        pairs = [
            (b.replica, a.replica)
            for b, a in zip(a2.by_n[n].run.outcomes, a2.by_n[n + 1].run.outcomes, strict=True)
            if b.replica is not None and a.replica is not None
        ]
        if pairs:
            remap[n] = sum(b != a for b, a in pairs) / len(pairs)
    return hashes.VariantResult(name, description, "live", by_n, remap)


async def compare_live(
    options: argparse.Namespace,
    keys: list[int],
    n_values: list[int],
    out: dict[str, Any],
    live: list[hashes.VariantResult],
) -> None:
    """Runs A-1 and A-2 on a balancer per `--compare` variant that this ringlb can start."""
    specs = options.compare or list(DEFAULT_COMPARE)
    unavailable: dict[str, str] = out["variants_unavailable"]
    for spec in specs:
        if spec == "none":
            continue
        name, _, args = spec.partition("=")
        serve_args = shlex.split(args)
        try:
            target = await asyncio.to_thread(
                LocalBalancer, [*serve_args, "--seed", str(options.seed), "--log-level", "WARNING"]
            )
        except RuntimeError as exc:
            unavailable[name] = str(exc).splitlines()[-1] if str(exc) else "did not start"
            print(f"A-4 variant {name}: not available ({unavailable[name]})", file=sys.stderr)
            continue
        try:
            async with LoadClient(target.url, options.concurrency) as client:
                with phase(f"A-4 live {name}"):
                    await ensure_count(client, 3)
                    a1 = await distribution.run(client, keys, label=f"A-4 {name}")
                    a2 = await scaling.run(client, keys, n_values)
        except (RuntimeError, aiohttp.ClientError, OSError) as exc:
            # One variant going wrong must not throw away the rest of the analysis.
            unavailable[name] = f"failed during the run: {exc}"
            print(f"A-4 variant {name}: {unavailable[name]}", file=sys.stderr)
            continue
        finally:
            out.setdefault("balancer_warnings", {})[name] = target.warnings()
            await asyncio.to_thread(target.close)
        description = target.description
        if serve_args[:1] == ["--policy"] and len(serve_args) == 2:
            options_used = getattr(make_policy(serve_args[1]), "options", None)
            if options_used:
                description += f" (policy defaults: {options_used})"
        result = live_result(name, description, a2, keys, n_values)
        result.by_n.setdefault(3, a1.stats)
        live.append(result)
        entry = result.as_dict()
        if serve_args[:1] == ["--policy"] and len(serve_args) == 2:
            at = hashes.policy_assigner(serve_args[1], a2.join_order)
            entry["live_vs_computed"] = {
                f"N={n}": hashes.agreement(r.answered(), at(n)) for n, r in a2.by_n.items()
            }
        out["live"].append(entry)


def write_outputs(analysis: Analysis, out: Path) -> list[Path]:
    """Writes every chart, the raw numbers and REPORT.md; returns the paths."""
    res = analysis.results
    a1, a2, a3, variants = analysis.a1, analysis.a2, analysis.a3, analysis.variants
    assert a1 is not None and a2 is not None
    label = f"balancer at {analysis.options.url}" if analysis.options.url else "assignment ring"
    files = [
        distribution.chart(a1, out / "a1_distribution.png", label),
        scaling.chart(a2, out / "a2_scaling.png", label),
        hashes.chart_distribution(variants, out / "a4_hash_distribution.png"),
        hashes.chart_scaling(variants, out / "a4_hash_scaling.png"),
        hashes.chart_remap(variants, out / "a4_remap.png"),
    ]
    if a3 is not None:
        files.append(failure.chart(a3, out / "a3_failure_timeline.png"))
    results_path = out / "results.json"
    results_path.write_text(json.dumps(res, indent=2, default=str) + "\n")
    files.append(results_path)
    files.append(
        _csv(
            out / "a1_counts.csv",
            ["replica", "requests"],
            [[k, v] for k, v in a1.stats.counts.items()],
        )
    )
    files.append(
        _csv(
            out / "a2_scaling.csv",
            ["N", "replica", "requests"],
            [[n, k, v] for n, r in sorted(a2.by_n.items()) for k, v in r.stats.counts.items()],
        )
    )
    if a3 is not None:
        files.append(
            _csv(
                out / "a3_failure_requests.csv",
                ["request_id", "sent_s", "done_s", "replica", "error"],
                [
                    [o.key, f"{o.sent:.4f}", f"{o.done:.4f}", o.replica or "", o.error or ""]
                    for o in a3.run.outcomes
                ],
            )
        )
    files.append(
        _csv(
            out / "a4_variants.csv",
            ["variant", "source", "N", "max_over_mean", "cv", "remap_to_next", "ideal_remap"],
            [
                [
                    v.name,
                    v.source,
                    n,
                    f"{s.max_over_mean:.4f}",
                    f"{s.cv:.4f}",
                    f"{v.remap[n]:.4f}" if n in v.remap else "",
                    f"{1 / (n + 1):.4f}" if n in v.remap else "",
                ]
                for v in variants
                for n, s in sorted(v.by_n.items())
            ],
        )
    )
    files.append(report.write(res, out / "REPORT.md"))
    return files


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
