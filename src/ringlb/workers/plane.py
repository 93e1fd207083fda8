"""DataPlane: one process's data plane assembled from the settings: upstream pools, the
forwarder, the deadline sweep and the listener, over a `Routing` and local endpoints.

The single-process balancer builds one over its ReplicaSet and admin API; each worker of
`--workers N` builds one over the membership the control process pushes to it.
"""

from __future__ import annotations

import random
import ssl

from ringlb.config import Settings
from ringlb.dataplane.access_log import AccessLog
from ringlb.dataplane.connection import ClientConnection, ClientLimits
from ringlb.dataplane.deadlines import DeadlineSweep
from ringlb.dataplane.forward import Forwarder
from ringlb.dataplane.keys import RandomKeys, make_key_source
from ringlb.dataplane.listener import Listener
from ringlb.dataplane.pool import UpstreamPools
from ringlb.dataplane.routing import LocalEndpoints, Routing
from ringlb.dataplane.tls import client_context

DEADLINE_TICK = 0.25  # resolution of client deadlines and of the upstream timeout (s)


def upstream_tls(settings: Settings) -> ssl.SSLContext | None:
    """Returns the client context for replicas that speak HTTPS (--upstream-tls), or None."""
    if not settings.upstream_tls:
        return None
    return client_context(settings.upstream_tls_ca, settings.upstream_tls_verify)


class DataPlane:
    """The parts of a data plane; `sweep.run()` must run while it serves."""

    def __init__(
        self,
        settings: Settings,
        routing: Routing,
        endpoints: LocalEndpoints,
        key_seed: float,
        max_connections: int,
    ) -> None:
        self.pools = UpstreamPools(
            settings.upstream_pool_size,
            settings.upstream_connect_timeout,
            settings.queue_size,
            settings.queue_timeout,
            upstream_tls(settings),
        )
        access_log = (
            AccessLog(settings.access_log_sample, random.Random(settings.seed))
            if settings.access_log_sample > 0
            else None
        )
        self.forwarder = Forwarder(
            routing,
            self.pools,
            key_source=make_key_source(settings.key_source),
            random_key=RandomKeys(random.Random(key_seed)),
            max_attempts=settings.upstream_max_attempts,
            max_inflight=settings.max_inflight,
            retry_5xx=settings.retry_on_5xx,
            access_log=access_log,
        )
        clients: set[ClientConnection] = set()
        self.sweep = DeadlineSweep(
            clients,  # type: ignore[arg-type]
            self.pools.busy,  # type: ignore[arg-type]
            settings.upstream_timeout,
            DEADLINE_TICK,
        )
        self.listener = Listener(
            self.forwarder,
            endpoints,
            ClientLimits(
                header_timeout=settings.client_header_timeout,
                body_timeout=settings.client_body_timeout,
                idle_timeout=settings.client_idle_timeout,
                send_timeout=settings.client_send_timeout,
                send_buffer=settings.client_send_buffer,
                max_header_bytes=settings.max_header_bytes,
                max_headers=settings.max_headers,
                max_body=settings.max_body,
                tunnel_idle_timeout=settings.tunnel_idle_timeout,
            ),
            self.sweep,
            clients,
            max_connections,
        )
