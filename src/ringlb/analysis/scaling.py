"""A-2: the load per replica as N goes from 2 to 6, changed through `/add` and `/rm`.

The run first grows the set to the largest N with `/add`, then shrinks it one replica at
a time with `/rm` (always the newest), measuring at each N with the same request ids.
Removing the newest keeps the older replicas' ring positions, so the ring at each N is the
ring a fresh balancer with N replicas would build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ringlb.analysis import charts
from ringlb.analysis.client import LoadClient
from ringlb.analysis.distribution import DistributionResult
from ringlb.analysis.distribution import run as measure


@dataclass
class ScalingResult:
    by_n: dict[int, DistributionResult]
    # Every replica in join order, the ones added here last: ring ids follow this order.
    join_order: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "join_order": self.join_order,
            "by_n": {str(n): r.as_dict() for n, r in sorted(self.by_n.items())},
        }


def new_names(existing: Sequence[str], count: int) -> list[str]:
    """Returns `count` names `server_<k>` that are not in `existing`, k counting up."""
    names: list[str] = []
    k = 1
    while len(names) < count:
        candidate = f"server_{k}"
        if candidate not in existing:
            names.append(candidate)
        k += 1
    return names


async def run(client: LoadClient, keys: Sequence[int], n_values: Sequence[int]) -> ScalingResult:
    """Returns the distribution at every N in `n_values`; leaves min(n_values) replicas."""
    replicas = await client.replicas()
    top, bottom = max(n_values), min(n_values)
    if len(replicas) < top:
        replicas = await client.change(
            "/add", top - len(replicas), new_names(replicas, top - len(replicas))
        )
    result = ScalingResult({}, list(replicas))
    while len(replicas) > top:
        replicas = await client.change("/rm", 1, [replicas[-1]])
    for n in range(top, bottom - 1, -1):
        if n in n_values:
            result.by_n[n] = await measure(client, keys, label="A-2")
        if n > bottom:
            # Read /rep again: the supervisor may have replaced a replica meanwhile.
            replicas = await client.replicas()
            replicas = await client.change("/rm", 1, [replicas[-1]])
    return result


def plot_spread(ax, result: ScalingResult, label: str, color: str = "tab:blue") -> None:
    """Draws mean load per replica vs N with a min..max band, ±std bars and every replica."""
    ns = sorted(result.by_n)
    stats = [result.by_n[n].stats for n in ns]
    means = [s.mean for s in stats]
    ax.fill_between(
        ns,
        [min(s.counts.values()) for s in stats],
        [max(s.counts.values()) for s in stats],
        color=color,
        alpha=0.15,
        label=f"{label}: min..max",
    )
    ax.errorbar(
        ns,
        means,
        yerr=[s.std for s in stats],
        color=color,
        marker="o",
        capsize=4,
        label=f"{label}: mean ± std",
    )
    for n, s in zip(ns, stats, strict=True):
        ax.scatter([n] * len(s.counts), list(s.counts.values()), color=color, s=10, alpha=0.6)
    ax.set_xticks(ns)
    ax.set_xlabel("number of replicas N")
    ax.set_ylabel("requests per replica")


def chart(result: ScalingResult, path: Path, policy: str) -> Path:
    fig, (left, right) = charts.figure(width=12, ncols=2)
    ns = sorted(result.by_n)
    sent = result.by_n[ns[0]].run.sent
    plot_spread(left, result, policy)
    left.plot(ns, [sent / n for n in ns], color="gray", linestyle=":", label="ideal requests/N")
    left.set_title(f"A-2: average load per replica, {sent:,} requests per N ({policy})")
    left.legend()
    ratios = [result.by_n[n].stats.max_over_mean for n in ns]
    bars = right.bar([str(n) for n in ns], ratios, color="tab:orange")
    right.bar_label(bars, labels=[f"{r:.2f}" for r in ratios], padding=2)
    right.axhline(1.0, color="gray", linestyle=":", label="perfectly even (1.0)")
    right.set_title("A-2: busiest replica vs the mean (max/mean)")
    right.set_xlabel("number of replicas N")
    right.set_ylabel("max / mean")
    right.set_ylim(0, max(ratios) * 1.15)
    right.legend()
    # Name the busiest replica at each N, so the chart says who carries the load.
    for index, n in enumerate(ns):
        counts = result.by_n[n].stats.counts
        busiest = max(counts, key=counts.__getitem__)
        right.text(index, ratios[index] / 2, busiest, ha="center", rotation=90, color="white")
    return charts.save(fig, path)
