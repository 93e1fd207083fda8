"""Micro-benchmark of the balancing policies: spread, remap, lookup cost and rebuild time.

    python bench/policies.py            # every hash policy, a table on stdout
    python bench/policies.py --json F   # also write the figures to F

For each hash policy (defaults, xxhash64 where a hash is chosen):
- spread: N = 2..6 replicas, 10,000 random 6-digit ids from a fixed seed as keys (what
  `X-Request-ID` carries); busiest replica / mean. Target for the default: <= 1.05.
- add: keys that move when replica N+1 joins, as a multiple of the ideal 1/(N+1) (<= 1.15).
- remove: keys that move although their replica stayed (0 for a consistent hash, up to
  Maglev's small disruption).
- lookup: microseconds per `pick(key)` at N = 1,000 (best of 5 runs of 20,000 keys).
- rebuild: milliseconds per `build(replicas)` at N = 100 (best of 5).
Timings are CPU time of this process (time.process_time, so other load on the machine
distorts them less than wall clock); no test asserts them.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ringlb.model import Replica
from ringlb.policies import make_policy

SEED = 20261126
KEYS = 10_000
CANDIDATES = {
    "assignment": {},
    "ring": {},
    "ring vnodes=1000": {"vnodes": 1000},
    "maglev": {},
    "rendezvous": {},
    "maglev bounded": {"bounded": True},
}


def replicas(count: int) -> list[Replica]:
    return [Replica(f"server_{i}", i, "127.0.0.1", 0) for i in range(1, count + 1)]


def request_ids(count: int, seed: int = SEED) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(100000, 999999) for _ in range(count)]


def spread(policy, n: int, keys: list[int]) -> float:
    """Returns busiest / mean over `keys` with `n` replicas."""
    picker = policy.build(replicas(n))
    counts = Counter(picker.pick(k).name for k in keys)
    return max(counts.values()) / (len(keys) / n)


def remap_on_add(policy, n: int, keys: list[int]) -> float:
    """Returns the fraction of keys that move when replica n+1 joins, over 1/(n+1)."""
    group = replicas(n + 1)
    before = policy.build(group[:n])
    after = policy.build(group)
    moved = sum(before.pick(k) is not after.pick(k) for k in keys)
    return moved / len(keys) * (n + 1)


def remap_on_remove(policy, n: int, keys: list[int]) -> float:
    """Returns the fraction of keys that move although their replica is still there."""
    group = replicas(n)
    before = policy.build(group)
    after = policy.build(group[1:])
    staying = [k for k in keys if before.pick(k) is not group[0]]
    moved = sum(before.pick(k) is not after.pick(k) for k in staying)
    return moved / len(staying)


def lookup_us(policy, n: int = 1000, count: int = 20_000) -> float | None:
    try:
        picker = policy.build(replicas(n))
    except ValueError:  # `assignment` holds at most 56 replicas
        return None
    keys = request_ids(count, SEED + 1)
    pick = picker.pick
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for key in keys:
            pick(key)
        best = min(best, time.process_time() - start)
    return best / count * 1e6


def rebuild_ms(policy, n: int = 100) -> float | None:
    group = replicas(n)
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        try:
            policy.build(group)
        except ValueError:  # `assignment` holds at most 56 replicas
            return None
        best = min(best, time.process_time() - start)
    return best * 1e3


def measure(label: str, options: dict) -> dict:
    name = label.split()[0]
    policy = make_policy(name, **options)
    keys = request_ids(KEYS)
    ns = range(2, 7)
    return {
        "policy": label,
        "spread": {n: round(spread(policy, n, keys), 3) for n in ns},
        "add": {n: round(remap_on_add(policy, n, keys), 3) for n in ns},
        "remove": {n: round(remap_on_remove(policy, n, keys), 4) for n in ns},
        "lookup_us_n1000": _round(lookup_us(policy), 2),
        "rebuild_ms_n100": _round(rebuild_ms(policy), 1),
    }


def python_speed_ms() -> float:
    """Returns the CPU milliseconds of a fixed pure-Python loop (10^6 additions): a yardstick
    to compare the timings of two machines."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        total = 0
        for i in range(1_000_000):
            total += i
        best = min(best, time.process_time() - start)
    return best * 1e3


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _cell(value: float | None, width: int, digits: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("policies", nargs="*", help=f"labels (default: {', '.join(CANDIDATES)})")
    args = parser.parse_args()
    labels = args.policies or list(CANDIDATES)
    rows = []
    print(f"yardstick: 10^6 pure-Python additions take {python_speed_ms():.0f} ms here")
    print(
        f"{'policy':18} {'busiest/mean N=2..6':32} {'max':>5} {'add/ideal max':>13} "
        f"{'remove max':>10} {'lookup us':>9} {'rebuild ms':>10}"
    )
    for label in labels:
        row = measure(label, CANDIDATES.get(label, {}))
        rows.append(row)
        spreads = " ".join(f"{v:.3f}" for v in row["spread"].values())
        print(
            f"{label:18} {spreads:32} {max(row['spread'].values()):5.3f} "
            f"{max(row['add'].values()):13.3f} {max(row['remove'].values()):10.4f} "
            f"{_cell(row['lookup_us_n1000'], 9, 2)} {_cell(row['rebuild_ms_n100'], 10, 1)}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    add_means = {r["policy"]: statistics.mean(r["add"].values()) for r in rows}
    print("mean add/ideal:", {k: round(v, 3) for k, v in add_means.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
