"""The types every plane shares: a replica, a policy's picker and the routing snapshot.

The control plane writes membership and publishes `Snapshot`s; the data plane reads one
snapshot per request and bumps the counters of the replica it used. Both import this
module, and it imports nothing of theirs.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Protocol

# Upper bounds (s) of the upstream latency histogram's buckets; a last bucket takes the rest.
# Latencies come from event-loop timestamps the data plane takes anyway (uvloop's clock
# ticks in milliseconds), so the histogram starts at 1 ms instead of paying for a finer clock.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(eq=False, slots=True)
class Replica:
    """One replica. Identity is the object (names can be reused after `/rm`).

    `rid` is the integer id the assignment ring hashes (from a counter starting at 1, never
    reused). `inflight` is the number of requests the proxy has open on it; it and the answer
    counters are the only fields that change after creation, and only the data plane writes
    them. The counters are plain integers bumped per answer (a Prometheus client object per
    request would cost more than the rest of the bookkeeping); `ringlb.admin.metrics` reads them
    at scrape time.
    """

    name: str
    rid: int
    host: str
    port: int
    weight: float = 1.0
    inflight: int = field(default=0, compare=False)
    answers: list[int] = field(default_factory=lambda: [0] * 10)  # by status // 100
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    latency_sum: float = 0.0
    errors_in_row: int = 0  # consecutive 5xx answers: passive outlier detection
    tunnels: int = 0  # open upgraded connections (WebSocket) to this replica

    def count_answer(self, status: int, seconds: float) -> None:
        """Counts one answer relayed from this replica, with the replica's latency."""
        self.answers[status // 100] += 1
        self.latency_counts[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.latency_sum += seconds

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __repr__(self) -> str:
        return f"Replica({self.name!r}, rid={self.rid}, {self.host}:{self.port})"


class Picker(Protocol):
    """A policy's immutable routing state (a ring, a table...) over the serving replicas;
    the data plane calls `pick` on every request, so it must be fast and never block."""

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        """Returns the replica for `key`, skipping `exclude` (replicas that already failed
        this request), or None when no replica is left."""
        ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Immutable routing state: the serving replicas in join order and the policy's picker.
    `keyed` says whether the picker routes on the request key (a hash policy): when it does
    not, the data plane does not compute one."""

    version: int
    replicas: tuple[Replica, ...]
    picker: Picker
    keyed: bool = False

    def names(self) -> list[str]:
        return [r.name for r in self.replicas]
