"""The operators' endpoints: `/metrics` (Prometheus), `/status` (JSON for the status page)
and `/dashboard` (the status page itself, one self-contained HTML file).

They are admin routes, so the data plane never proxies them; like `/rep` they only read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from ringlb import contract
from ringlb.admin.api import Handler
from ringlb.admin.metrics import CONTENT_TYPE, BalancerCollector, LayoutCache, MetricsExporter
from ringlb.control.autoscaler import Autoscaler
from ringlb.control.cluster import Cluster
from ringlb.control.membership import ReplicaSet
from ringlb.control.supervisor import Supervisor
from ringlb.dataplane.forward import Forwarder
from ringlb.dataplane.routing import LocalAnswer
from ringlb.policies import describe_policy

HTML_CONTENT_TYPE = b"text/html; charset=utf-8"
NO_STORE = [(b"Cache-Control", b"no-store")]


class ObservabilityRoutes:
    """Handlers of `/metrics`, `/status` and `/dashboard`; `routes` is for AdminAPI.mount."""

    def __init__(
        self,
        replicaset: ReplicaSet,
        forwarder: Forwarder,
        supervisor: Supervisor,
        autoscaler: Autoscaler | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        self._replicaset = replicaset
        self._forwarder = forwarder
        self._supervisor = supervisor
        self._layouts = LayoutCache(replicaset)
        self._metrics = MetricsExporter(
            BalancerCollector(replicaset, forwarder, supervisor, self._layouts, autoscaler, cluster)
        )
        # Extra sections of /status, by key, each computed when it is read (the workers;
        # this balancer's role among several).
        self.sections: dict[str, Callable[[], Any]] = {}
        if cluster is not None:
            self.sections["balancer"] = cluster.describe
        self._page = resources.files("ringlb.admin").joinpath("dashboard.html").read_bytes()
        self.routes: dict[str, dict[str, Handler]] = {
            "/metrics": {"GET": self.metrics, "HEAD": self.metrics},
            "/status": {"GET": self.status, "HEAD": self.status},
            "/dashboard": {"GET": self.dashboard, "HEAD": self.dashboard},
        }

    async def metrics(self, body: bytes) -> LocalAnswer:
        return LocalAnswer(200, self._metrics.render(), NO_STORE, CONTENT_TYPE.encode())

    async def dashboard(self, body: bytes) -> LocalAnswer:
        return LocalAnswer(200, self._page, NO_STORE, HTML_CONTENT_TYPE)

    async def status(self, body: bytes) -> LocalAnswer:
        return LocalAnswer(200, contract.success(self.snapshot()), NO_STORE)

    def snapshot(self) -> dict[str, Any]:
        """Returns what the status page shows: replicas with state, in-flight, open
        tunnels, answer counters and ring share; the ring (or a sample of the table);
        recent events."""
        rs, forwarder = self._replicaset, self._forwarder
        layout = self._layouts.current()
        replicas = []
        for replica, state in rs.members():
            answers = replica.answers
            replicas.append(
                {
                    "name": replica.name,
                    "state": state.value,
                    "inflight": replica.inflight,
                    "tunnels": replica.tunnels,
                    "answered": sum(answers),
                    "errors": answers[5],
                    "slots": layout.owned.get(replica, 0) if layout is not None else None,
                    "share": layout.share.get(replica, 0.0) if layout is not None else None,
                }
            )
        ring = None
        if layout is not None:
            ring = {
                "size": layout.size,
                "points": [[position, owner.name] for position, owner in layout.points],
            }
        return {
            "time": time.time(),
            "policy": describe_policy(rs.policy),
            "target": rs.target,
            "serving": len(rs.snapshot.replicas),
            "replicas": replicas,
            "ring": ring,
            "events": [
                {"time": e.time, "kind": e.kind, "replica": e.replica, "detail": e.detail}
                for e in reversed(rs.events)
            ],
            "counters": {
                "retries": forwarder.retries,
                "ejections": rs.ejections,
                "deaths": rs.deaths,
                "respawns": self._supervisor.respawns,
                "unrouted": forwarder.all_failed + forwarder.no_replica,
            },
            **{key: section() for key, section in self.sections.items()},
        }
