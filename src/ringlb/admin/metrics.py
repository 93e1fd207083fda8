"""`/metrics`: the balancer's counters in the Prometheus text format (prometheus-client).

The data plane only bumps plain integers on objects it already holds (Replica counters,
Proxy.retries...). This collector turns them into metric families when Prometheus
scrapes, so the cost of metrics is paid per scrape, not per request.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ringlb.control.autoscaler import Autoscaler
from ringlb.control.cluster import Cluster
from ringlb.control.membership import ReplicaSet
from ringlb.control.supervisor import Supervisor
from ringlb.dataplane.forward import Forwarder
from ringlb.model import LATENCY_BOUNDS
from ringlb.policies.base import Layout

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


class LayoutCache:
    """Returns the layout of the current snapshot's picker, computed once per picker (a
    Maglev table has 65,537 entries to count)."""

    def __init__(self, replicaset: ReplicaSet) -> None:
        self._replicaset = replicaset
        self._picker: object = None
        self._layout: Layout | None = None

    def current(self) -> Layout | None:
        picker = self._replicaset.snapshot.picker
        if picker is not self._picker:
            describe = getattr(picker, "layout", None)
            self._layout = describe() if describe is not None else None
            self._picker = picker
        return self._layout


class BalancerCollector(Collector):
    """Reads the balancer's plain counters at scrape time."""

    def __init__(
        self,
        replicaset: ReplicaSet,
        forwarder: Forwarder,
        supervisor: Supervisor,
        layouts: LayoutCache,
        autoscaler: Autoscaler | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self._replicaset = replicaset
        self._forwarder = forwarder
        self._supervisor = supervisor
        self._layouts = layouts
        self._autoscaler = autoscaler
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        rs, forwarder = self._replicaset, self._forwarder
        members = rs.members()
        requests = CounterMetricFamily(
            "ringlb_requests",
            "Answers relayed from replicas, by replica and status class.",
            labels=["replica", "code"],
        )
        latency = HistogramMetricFamily(
            "ringlb_upstream_latency_seconds",
            "Time from sending a request to a replica to the last byte of its answer.",
            labels=["replica"],
        )
        inflight = GaugeMetricFamily(
            "ringlb_inflight_requests", "Requests open on each replica.", labels=["replica"]
        )
        tunnels = GaugeMetricFamily(
            "ringlb_open_tunnels",
            "Upgraded connections (WebSocket) open to each replica.",
            labels=["replica"],
        )
        state = GaugeMetricFamily(
            "ringlb_replica_state",
            "1 for the state each replica is in (starting, serving, ejected, down, retiring).",
            labels=["replica", "state"],
        )
        for replica, member_state in members:
            name = replica.name
            for code, count in enumerate(replica.answers):
                if count:
                    requests.add_metric([name, f"{code}xx"], count)
            cumulative, buckets = 0, []
            for bound, count in zip(LATENCY_BOUNDS, replica.latency_counts, strict=False):
                cumulative += count
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", cumulative + replica.latency_counts[-1]))
            latency.add_metric([name], buckets, replica.latency_sum)
            inflight.add_metric([name], replica.inflight)
            tunnels.add_metric([name], replica.tunnels)
            state.add_metric([name, member_state.value], 1)
        yield requests
        yield latency
        yield inflight
        yield tunnels
        yield state

        unanswered = CounterMetricFamily(
            "ringlb_unrouted_requests",
            "Requests the balancer answered itself: 502 (every attempt failed) or 503 (no "
            "replica in the ring).",
            labels=["code"],
        )
        unanswered.add_metric(["502"], forwarder.all_failed)
        unanswered.add_metric(["503"], forwarder.no_replica)
        yield unanswered
        yield CounterMetricFamily(
            "ringlb_retries", "Attempts after a failed one.", value=forwarder.retries
        )
        yield CounterMetricFamily(
            "ringlb_ejections",
            "Replicas taken out of the ring after a failed request.",
            value=rs.ejections,
        )
        yield CounterMetricFamily("ringlb_replica_deaths", "Replicas found dead.", value=rs.deaths)
        yield CounterMetricFamily(
            "ringlb_respawns",
            "Replicas started to replace dead ones.",
            value=self._supervisor.respawns,
        )
        yield GaugeMetricFamily(
            "ringlb_replicas_target", "The replica count the supervisor keeps.", value=rs.target
        )
        if self._autoscaler is not None:
            decisions = CounterMetricFamily(
                "ringlb_autoscaler_decisions",
                "Replica count changes made by the autoscaler.",
                labels=["direction"],
            )
            for direction, count in self._autoscaler.decisions.items():
                decisions.add_metric([direction], count)
            yield decisions
        if self._cluster is not None:
            part = self._cluster.describe()
            leader = GaugeMetricFamily(
                "ringlb_balancer_leader",
                "1 when this balancer leads the ones sharing its replicas, 0 when it follows.",
                labels=["balancer"],
            )
            leader.add_metric([part["name"]], 1 if part["role"] == "leader" else 0)
            yield leader
            yield CounterMetricFamily(
                "ringlb_leader_takeovers",
                "Times this balancer took the lease over.",
                value=part["takeovers"],
            )
            yield CounterMetricFamily(
                "ringlb_relayed_writes",
                "Admin writes this balancer handed to the leader.",
                value=part["relayed_writes"],
            )
        yield GaugeMetricFamily(
            "ringlb_replicas_serving",
            "Replicas in the ring (the actual count).",
            value=len(rs.snapshot.replicas),
        )

        layout = self._layouts.current()
        if layout is not None:
            yield GaugeMetricFamily(
                "ringlb_ring_size",
                "Positions on the policy's ring or table.",
                value=layout.size,
            )
            owned = GaugeMetricFamily(
                "ringlb_ring_slots",
                "Ring virtual nodes or table entries owned by each replica.",
                labels=["replica"],
            )
            share = GaugeMetricFamily(
                "ringlb_ring_share",
                "Fraction of the key space each replica serves on the ring or table.",
                labels=["replica"],
            )
            for replica, count in layout.owned.items():
                owned.add_metric([replica.name], count)
                share.add_metric([replica.name], layout.share.get(replica, 0.0))
            yield owned
            yield share


class FrozenHeapCollector(Collector):
    """The objects the cyclic collector no longer walks (see `ringlb.memory`)."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "ringlb_gc_frozen_objects",
            "Objects made before serving began, kept out of the cyclic collector's walks.",
            value=gc.get_freeze_count(),
        )


class MetricsExporter:
    """Renders `/metrics`: the balancer's collector plus the process's CPU, memory and
    cyclic collector."""

    def __init__(self, collector: BalancerCollector) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(collector)
        self._registry.register(FrozenHeapCollector())
        ProcessCollector(registry=self._registry)
        GCCollector(registry=self._registry)

    def render(self) -> bytes:
        return generate_latest(self._registry)
