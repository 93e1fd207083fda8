"""Wiring and lifecycle: builds the planes from the settings, starts them in order and
stops them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import resource
import signal

from ringlb.admin.api import AdminAPI
from ringlb.admin.observability import ObservabilityRoutes
from ringlb.config import Settings, SettingsError
from ringlb.control.autoscaler import Autoscaler, ScalingRules
from ringlb.control.health import HeartbeatMonitor, HeartbeatProber
from ringlb.control.membership import OutlierRules, ReplicaSet
from ringlb.control.supervisor import Backoff, Supervisor
from ringlb.dataplane.access_log import AccessLog
from ringlb.dataplane.connection import ADMIN_ONLY, BOTH, PROXY_ONLY
from ringlb.dataplane.forward import Capacity, ClientLimits, Proxy
from ringlb.dataplane.keys import RandomKeys, make_key_source
from ringlb.policies import capacity_error, make_policy
from ringlb.runtimes import Runtime, make_runtime

log = logging.getLogger("ringlb")


# Descriptors kept for replica connections, probes, logs and the listeners themselves.
RESERVED_DESCRIPTORS = 512


def connection_cap(configured: int) -> int:
    """Returns `configured`, lowered to what the open-file limit allows: past it, accept()
    would fail with EMFILE instead of clients getting a clean 503."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or configured <= soft - RESERVED_DESCRIPTORS:
        return configured
    allowed = max(1, soft - RESERVED_DESCRIPTORS)
    log.warning(
        "max_connections %d lowered to %d: the open-file limit is %d", configured, allowed, soft
    )
    return allowed


class Balancer:
    """The running balancer: `start()` returns once it serves, `stop()` undoes everything."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        rng = random.Random(settings.seed)
        self.runtime = runtime or make_runtime(settings)
        self.prober = HeartbeatProber(settings.heartbeat_timeout)
        policy = make_policy(settings.policy, **settings.policy_options)
        too_small = capacity_error(policy, settings.max_replicas)
        if too_small is not None:
            raise SettingsError(
                f"invalid max_replicas (RINGLB_MAX_REPLICAS, --max-replicas): {too_small}"
            )
        self.replicaset = ReplicaSet(
            self.runtime,
            policy,
            self.prober.probe,
            max_replicas=settings.max_replicas,
            start_timeout=settings.replica_start_timeout,
            drain_timeout=settings.drain_timeout,
            outliers=OutlierRules(
                settings.outlier_consecutive_errors,
                settings.outlier_ejection_time,
                settings.outlier_max_ejections,
            ),
            rng=rng,
            weights=settings.weights,
        )
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.admin = AdminAPI(self.replicaset, token, settings.admin_protect_reads)
        self.proxy = Proxy(
            self.replicaset,
            self.admin,
            pool_size=settings.upstream_pool_size,
            connect_timeout=settings.upstream_connect_timeout,
            timeout=settings.upstream_timeout,
            max_attempts=settings.upstream_max_attempts,
            max_body=settings.max_body,
            random_key=RandomKeys(random.Random(rng.random())),
            key_source=make_key_source(settings.key_source),
            limits=ClientLimits(
                header_timeout=settings.client_header_timeout,
                body_timeout=settings.client_body_timeout,
                idle_timeout=settings.client_idle_timeout,
                max_header_bytes=settings.max_header_bytes,
                max_headers=settings.max_headers,
            ),
            retry_5xx=settings.retry_on_5xx,
            capacity=Capacity(
                max_inflight=settings.max_inflight,
                max_connections=connection_cap(settings.max_connections),
                queue_size=settings.queue_size,
                queue_timeout=settings.queue_timeout,
            ),
        )
        self.replicaset.on_forget.append(self.proxy.forget)
        self.monitor = HeartbeatMonitor(
            self.replicaset, self.prober, settings.heartbeat_interval, settings.heartbeat_misses
        )
        self.supervisor = Supervisor(
            self.replicaset,
            Backoff(
                settings.respawn_backoff,
                settings.respawn_backoff_max,
                settings.respawn_stable_after,
            ),
        )
        self.autoscaler = (
            Autoscaler(
                self.replicaset,
                ScalingRules(
                    min_replicas=settings.autoscale_min,
                    max_replicas=settings.autoscale_max,
                    target_inflight=settings.autoscale_target_inflight,
                    tolerance=settings.autoscale_tolerance,
                    up_cooldown=settings.autoscale_up_cooldown,
                    down_cooldown=settings.autoscale_down_cooldown,
                    window=settings.autoscale_window,
                ),
            )
            if settings.autoscale
            else None
        )
        self.admin.mount(
            ObservabilityRoutes(
                self.replicaset, self.proxy, self.supervisor, self.autoscaler
            ).routes
        )
        if settings.access_log_sample > 0:
            self.proxy.access_log = AccessLog(
                settings.access_log_sample, random.Random(settings.seed)
            )
        self.server: asyncio.Server | None = None
        self.admin_server: asyncio.Server | None = None
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Adopts or starts the initial replicas, then listens. Raises if they fail."""
        settings, rs = self.settings, self.replicaset
        adopted = await self.runtime.adopt()
        rs.adopt(adopted)
        if adopted:
            log.info("adopted %d replica(s): %s", len(adopted), ", ".join(rs.names()))
        rs.target = max(settings.replicas, len(adopted))
        # Deaths are watched before the first start, so a replica that dies while starting
        # fails its start at once instead of after the start timeout.
        self.tasks = [
            asyncio.create_task(self._forward_runtime_deaths(), name="runtime-events"),
            asyncio.create_task(self.proxy.run_deadlines(), name="client-deadlines"),
        ]
        names = [n for n in settings.initial_hostnames() if n not in rs.names()]
        async with rs.lock:
            await rs.spawn(names[: rs.missing()])
        self.tasks += [
            asyncio.create_task(self.monitor.run(), name="heartbeat-monitor"),
            asyncio.create_task(self.supervisor.run(), name="supervisor"),
        ]
        if self.autoscaler is not None:
            self.tasks.append(asyncio.create_task(self.autoscaler.run(), name="autoscaler"))
        loop = asyncio.get_running_loop()
        split = settings.admin_port is not None
        self.server = await loop.create_server(
            lambda: self.proxy.protocol(PROXY_ONLY if split else BOTH),
            settings.host,
            settings.port,
            backlog=4096,
            reuse_address=True,
        )
        if split:
            self.admin_server = await loop.create_server(
                lambda: self.proxy.protocol(ADMIN_ONLY),
                settings.admin_host,
                settings.admin_port,
                reuse_address=True,
            )
            address = self.admin_server.sockets[0].getsockname()
            log.info("admin API on its own listener: http://%s:%d", address[0], address[1])
        log.info(
            "ringlb listening on http://%s:%d (runtime=%s, policy=%s, replicas=%s, admin %s)",
            settings.host,
            self.port,
            self.runtime.name,
            rs.policy.name,
            ",".join(rs.snapshot.names()),
            "token required" if settings.admin_token else "open",
        )

    async def _forward_runtime_deaths(self) -> None:
        async for name in self.runtime.deaths():
            self.replicaset.report_death(name)

    async def stop(self) -> None:
        """Stops listening, cancels the control plane, closes pools, stops replicas."""
        for server in (self.server, self.admin_server):
            if server is not None:
                server.close()
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []
        self.proxy.close()
        await self.replicaset.shutdown()
        await self.runtime.close()
        await self.prober.close()
        log.info("ringlb stopped")


async def serve(settings: Settings) -> None:
    """Runs the balancer until SIGTERM or SIGINT, then shuts it down cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    balancer = Balancer(settings)
    try:
        await balancer.start()
        await stop.wait()
        log.info("shutting down")
    finally:
        await balancer.stop()
