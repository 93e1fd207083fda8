"""A-4: the specification's hash functions against modified ones, computed and live.

Computed variants build the `ring` policy's table (`ringlb.policies.ring.build_ring`) with
other hash functions, on the very request ids the live experiments sent, with replica ids
1..N as a fresh balancer assigns them. Live variants are balancers started with another
policy; what they would do is also predicted offline from the policy itself, so every live
number has a computed twin.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from ringlb.analysis import charts
from ringlb.analysis.distribution import LoadStats
from ringlb.model import Replica
from ringlb.policies.assignment import SPEC_SLOTS, SPEC_VNODES
from ringlb.policies.hashing import PolynomialHasher
from ringlb.policies.ring import PointHasher, build_ring

SPEC = PolynomialHasher()  # the specification's H and PHI
SIX_DIGIT_IDS = range(100000, 1000000)
GOLDEN32 = 0x9E3779B1  # 2^32 / golden ratio, Knuth's multiplicative hashing constant


def _blake64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def mixed_key_hash(i: int) -> int:
    """A well-mixed 64-bit key hash (BLAKE2b of the decimal id)."""
    return _blake64(str(i))


def mixed_vnode_hash(i: int, j: int) -> int:
    """A well-mixed 64-bit virtual-server hash (BLAKE2b of "i#j")."""
    return _blake64(f"{i}#{j}")


def fibonacci_key_hash(i: int) -> int:
    """Knuth's multiplicative hash: the top 9 bits of i * 2^32/phi, one of 512 slots."""
    return ((i * GOLDEN32) & 0xFFFFFFFF) >> 23


def fibonacci_vnode_hash(i: int, j: int) -> int:
    """Multiplicative hash of the virtual server's index i*K + j (K = 9)."""
    return fibonacci_key_hash(i * 9 + j)


@dataclass(frozen=True)
class Hashes:
    """A point hasher from two functions: H on the key, PHI on (replica id, j)."""

    key_hash: Callable[[int], int]
    vnode_hash: Callable[[int, int], int]

    def key(self, key: int) -> int:
        return self.key_hash(key)

    def node(self, replica: Replica, j: int) -> int:
        return self.vnode_hash(replica.rid, j)


def spec_vnode_hash(i: int, j: int) -> int:
    return SPEC.node(Replica("", i, "", 0), j)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    hasher: PointHasher
    slots: int = SPEC_SLOTS
    vnodes: int = SPEC_VNODES


VARIANTS: tuple[Variant, ...] = (
    Variant("spec", "H(i)=i²+2i+17, PHI(i,j)=i²+j²+2j+25; 512 slots, K=9", SPEC),
    Variant(
        "spec H + mixed PHI",
        "the specification's H, BLAKE2b virtual servers; 512 slots, K=9",
        Hashes(SPEC.key, mixed_vnode_hash),
    ),
    Variant(
        "mixed H + spec PHI",
        "BLAKE2b request hash, the specification's PHI; 512 slots, K=9",
        Hashes(mixed_key_hash, spec_vnode_hash),
    ),
    Variant(
        "multiplicative",
        "Knuth multiplicative (Fibonacci) hashing of i and i*9+j; 512 slots, K=9",
        Hashes(fibonacci_key_hash, fibonacci_vnode_hash),
    ),
    Variant(
        "well mixed (K=9)",
        "BLAKE2b 64-bit for both; 512 slots, K=9",
        Hashes(mixed_key_hash, mixed_vnode_hash),
    ),
    Variant(
        "well mixed (K=160)",
        "BLAKE2b 64-bit for both; 2^32 slots, 160 virtual servers",
        Hashes(mixed_key_hash, mixed_vnode_hash),
        slots=2**32,
        vnodes=160,
    ),
)

Lookup = Callable[[int], str | None]


def ring_assigner(variant: Variant, join_order: Sequence[str]) -> Callable[[int], Lookup]:
    """Returns n -> (lookup of a key on the ring of the first n replicas of `join_order`,
    replica i having ring id i + 1)."""

    def at(n: int) -> Lookup:
        members = [Replica(name, index + 1, "", 0) for index, name in enumerate(join_order[:n])]
        ring = build_ring(variant.hasher, variant.slots, ((r, variant.vnodes) for r in members))

        def lookup(key: int) -> str | None:
            replica = ring.pick(key) if members else None
            return replica.name if replica is not None else None

        return lookup

    return at


def distribution(lookup: Lookup, names: Sequence[str], keys: Sequence[int]) -> LoadStats:
    return LoadStats.of(names, Counter(lookup(k) for k in keys))


def remap_fraction(before: Lookup, after: Lookup, keys: Sequence[int]) -> float:
    """Returns the fraction of keys whose replica changes between two rings."""
    return sum(before(k) != after(k) for k in keys) / len(keys) if keys else 0.0


@dataclass
class VariantResult:
    name: str
    description: str
    source: str  # "computed" or "live"
    by_n: dict[int, LoadStats]
    remap: dict[int, float]  # N -> fraction moved when going from N to N+1

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "by_n": {str(n): s.as_dict() for n, s in sorted(self.by_n.items())},
            "remap_on_add": {str(n): round(f, 4) for n, f in sorted(self.remap.items())},
            "remap_ideal": {str(n): round(1 / (n + 1), 4) for n in sorted(self.remap)},
        }


def compute(
    variant: Variant, join_order: Sequence[str], keys: Sequence[int], n_values: Sequence[int]
) -> VariantResult:
    """Returns the variant's distribution at each N and its remap fraction N -> N+1."""
    return evaluate(
        variant.name,
        variant.description,
        "computed",
        ring_assigner(variant, join_order),
        join_order,
        keys,
        n_values,
    )


def policy_assigner(policy_name: str, join_order: Sequence[str]) -> Callable[[int], Lookup]:
    """Returns n -> lookup of the registered policy `policy_name` (default options) over the
    first n replicas of `join_order`, with ring ids 1..n: its offline prediction."""
    from ringlb.model import Replica
    from ringlb.policies import make_policy

    policy = make_policy(policy_name)

    def at(n: int) -> Lookup:
        replicas = [Replica(name, index + 1, "", 0) for index, name in enumerate(join_order[:n])]
        picker = policy.build(replicas)

        def lookup(key: int) -> str | None:
            replica = picker.pick(key)
            return replica.name if replica is not None else None

        return lookup

    return at


def evaluate(
    name: str,
    description: str,
    source: str,
    at: Callable[[int], Lookup],
    join_order: Sequence[str],
    keys: Sequence[int],
    n_values: Sequence[int],
) -> VariantResult:
    """Returns distributions at each N and remap fractions N -> N+1 of the lookups `at(n)`."""
    lookups = {n: at(n) for n in range(min(n_values), max(n_values) + 1)}
    by_n = {n: distribution(lookups[n], join_order[:n], keys) for n in n_values}
    remap = {
        n: remap_fraction(lookups[n], lookups[n + 1], keys)
        for n in range(min(n_values), max(n_values))
    }
    return VariantResult(name, description, source, by_n, remap)


def agreement(live: Sequence[tuple[int, str]], predicted: Lookup) -> dict[str, int]:
    """Returns how many answered requests (id, replica) went where the computed ring says."""
    same = sum(predicted(key) == replica for key, replica in live)
    return {"compared": len(live), "agree": same, "disagree": len(live) - same}


def spec_facts(keys: Sequence[int], n_max: int) -> dict[str, object]:
    """Returns the numbers that explain the specification ring's unevenness."""
    reachable = {SPEC.key(i) % SPEC_SLOTS for i in SIX_DIGIT_IDS}
    squares = {(x * x) % SPEC_SLOTS for x in range(SPEC_SLOTS)}
    sampled = Counter(SPEC.key(k) % SPEC_SLOTS for k in keys)
    members = [Replica(f"server_{i}", i, "", 0) for i in range(1, n_max + 1)]
    ring = build_ring(SPEC, SPEC_SLOTS, ((r, SPEC_VNODES) for r in members))
    positions = [slot for slot, _ in ring.nodes()]
    wrapped = sum(c for slot, c in sampled.items() if slot > positions[-1] or slot <= positions[0])
    vnode_slots = {
        str(i): sorted(spec_vnode_hash(i, j) % SPEC_SLOTS for j in range(SPEC_VNODES))
        for i in range(1, n_max + 1)
    }
    return {
        "distinct_H_slots_over_6_digit_ids": len(reachable),
        "quadratic_residues_mod_512": len(squares),
        "H_slots_equal_shifted_squares": reachable == {(s + 16) % SPEC_SLOTS for s in squares},
        "distinct_H_slots_in_sample": len(sampled),
        "vnode_slots_by_replica_id": vnode_slots,
        "ring_span_for_n_max": [positions[0], positions[-1]],
        "n_max": n_max,
        "share_of_keys_wrapping_to_first_vnode": round(wrapped / len(keys), 4) if keys else 0.0,
        "first_vnode_owner": ring.nodes()[0][1].name,
        "wrap_arc_slots": SPEC_SLOTS - positions[-1] + positions[0],
        "largest_inner_arc_slots": max(b - a for a, b in pairwise(positions)),
    }


def chart_distribution(results: Sequence[VariantResult], path: Path, n: int = 3) -> Path:
    """Draws the A-1 bars (N = n) of every variant side by side."""
    from ringlb.analysis.distribution import plot_bars

    ncols = 3
    nrows = -(-len(results) // ncols)
    fig, axes = charts.figure(width=13, height=3.9 * nrows, ncols=ncols, nrows=nrows)
    for ax, result in zip(axes, results, strict=False):
        stats = result.by_n[n]
        plot_bars(
            ax,
            stats,
            f"{result.name} ({result.source})\n"
            f"max/mean {stats.max_over_mean:.2f}, CV {stats.cv:.2f}",
            legend=False,
        )
    for ax in axes[len(results) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"A-4: A-1 repeated per hash function, N={n} (dashed line: the even share)",
        fontsize=13,
    )
    return charts.save(fig, path)


def line_style(result: VariantResult) -> dict[str, object]:
    """Returns solid lines with dots for computed variants and dashed lines with large
    crosses for live ones, so a live line lying on its computed twin stays visible."""
    if result.source == "computed":
        return {"linestyle": "-", "marker": "o"}
    return {"linestyle": "--", "marker": "x", "markersize": 10, "markeredgewidth": 2}


def chart_scaling(results: Sequence[VariantResult], path: Path) -> Path:
    """Draws max/mean and CV against N for every variant."""
    fig, (left, right) = charts.figure(width=13, height=5, ncols=2)
    for result in results:
        ns = sorted(result.by_n)
        look = line_style(result)
        label = f"{result.name} ({result.source})"
        left.plot(ns, [result.by_n[n].max_over_mean for n in ns], label=label, **look)
        right.plot(ns, [result.by_n[n].cv for n in ns], label=label, **look)
        left.set_xticks(ns)
        right.set_xticks(ns)
    left.axhline(1.0, color="gray", linestyle=":")
    left.set_title("A-4: A-2 repeated per hash function: max/mean per N")
    left.set_xlabel("number of replicas N")
    left.set_ylabel("max / mean (1.0 = even)")
    right.set_title("coefficient of variation per N")
    right.set_xlabel("number of replicas N")
    right.set_ylabel("std / mean (0 = even)")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    return charts.save(fig, path)


def chart_remap(results: Sequence[VariantResult], path: Path) -> Path:
    """Draws the fraction of keys that move when replica N+1 joins, against 1/(N+1)."""
    fig, (ax,) = charts.figure(width=9, height=5)
    ns: list[int] = []
    for result in results:
        ns = sorted(result.remap)
        ax.plot(
            ns,
            [result.remap[n] for n in ns],
            label=f"{result.name} ({result.source})",
            **line_style(result),
        )
    ax.plot(
        ns,
        [1 / (n + 1) for n in ns],
        color="black",
        linestyle=":",
        linewidth=2,
        label="ideal 1/(N+1)",
    )
    ax.set_xticks(ns)
    ax.set_xticklabels([f"{n}→{n + 1}" for n in ns])
    ax.set_title("A-4: fraction of keys that move to another replica when one replica joins")
    ax.set_xlabel("replicas before → after")
    ax.set_ylabel("fraction of request ids remapped")
    ax.legend(fontsize=8)
    return charts.save(fig, path)
