"""A-1: how 10,000 requests spread over N=3 replicas, and the numbers that describe it."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ringlb.analysis import charts
from ringlb.analysis.client import LoadClient, LoadRun


@dataclass(frozen=True)
class LoadStats:
    """Load per replica (zeros included) and how far it is from even."""

    counts: dict[str, int]

    @classmethod
    def of(cls, replicas: Sequence[str], counts: Mapping[str, int]) -> LoadStats:
        """Returns the stats over `replicas` in order; a replica nobody reached counts 0."""
        extra = [name for name in counts if name not in replicas]
        return cls({name: int(counts.get(name, 0)) for name in [*replicas, *extra]})

    @property
    def mean(self) -> float:
        return statistics.fmean(self.counts.values()) if self.counts else 0.0

    @property
    def std(self) -> float:
        """Population standard deviation of the per-replica load."""
        return statistics.pstdev(self.counts.values()) if self.counts else 0.0

    @property
    def max_over_mean(self) -> float:
        """1.0 is perfectly even; N means one replica takes everything."""
        return max(self.counts.values()) / self.mean if self.mean else 0.0

    @property
    def cv(self) -> float:
        """Coefficient of variation, std / mean (0 is perfectly even)."""
        return self.std / self.mean if self.mean else 0.0

    def as_dict(self) -> dict[str, object]:
        total = sum(self.counts.values())
        return {
            "counts": self.counts,
            "shares": {k: round(v / total, 4) if total else 0.0 for k, v in self.counts.items()},
            "mean": round(self.mean, 2),
            "std": round(self.std, 2),
            "min": min(self.counts.values(), default=0),
            "max": max(self.counts.values(), default=0),
            "max_over_mean": round(self.max_over_mean, 3),
            "cv": round(self.cv, 3),
        }


@dataclass
class DistributionResult:
    replicas: list[str]
    run: LoadRun
    stats: LoadStats
    keys: list[int]
    # /rep after the run; differs from `replicas` if a replica was replaced meanwhile.
    replicas_after: list[str] | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "replicas": self.replicas,
            "replicas_after": self.replicas_after,
            "load": self.run.summary(),
            **self.stats.as_dict(),
        }

    def answered(self) -> list[tuple[int, str]]:
        """Returns (request id, replica) for every answered request, in order."""
        return [(o.key, o.replica) for o in self.run.outcomes if o.replica is not None]


async def run(client: LoadClient, keys: Sequence[int], label: str = "A-1") -> DistributionResult:
    """Returns the distribution of one request per key over the current replicas."""
    replicas = await client.replicas()
    load = await client.burst(keys, label=f"{label} N={len(replicas)}")
    after = await client.replicas()
    if after != replicas:
        print(f"{label}: membership changed during the run: {replicas} -> {after}", file=sys.stderr)
    result = DistributionResult(replicas, load, LoadStats.of(replicas, load.counts), list(keys))
    result.replicas_after = after
    return result


def plot_bars(ax, stats: LoadStats, title: str, legend: bool = True) -> None:
    """Draws one bar per replica with its count written on the bar."""
    names = list(stats.counts)
    values = list(stats.counts.values())
    bars = ax.bar(names, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:,}" for v in values], padding=2)
    ax.axhline(stats.mean, color="tab:red", linestyle="--", label=f"even share ({stats.mean:,.0f})")
    ax.set_title(title)
    ax.set_xlabel("replica")
    ax.set_ylabel("requests handled")
    ax.set_ylim(0, max(values, default=1) * 1.15 + 1)
    if legend:
        ax.legend(loc="upper right")
    ax.tick_params(axis="x", labelrotation=20)


def chart(result: DistributionResult, path: Path, policy: str) -> Path:
    fig, (ax,) = charts.figure()
    sent = result.run.sent
    plot_bars(
        ax,
        result.stats,
        f"A-1: {sent:,} requests over N={len(result.replicas)} replicas ({policy})\n"
        f"max/mean {result.stats.max_over_mean:.2f}, CV {result.stats.cv:.2f}",
    )
    return charts.save(fig, path)
