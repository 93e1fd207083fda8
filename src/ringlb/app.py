"""Wiring and lifecycle: builds the planes from the settings, starts them in order and
stops them in reverse.

Start-up order: the runtime adopts what it already runs, the watch on replica deaths and
the deadline sweep start, the initial replicas start, then heartbeats, the supervisor (and
the autoscaler), and last the listeners (HTTPS, plain, admin; with `--workers N`, the
worker processes, which listen instead of this one). Each step registers its undo as it
succeeds, so a failed start-up undoes exactly what was done, and `stop` undoes everything
in reverse: the listeners drain (in-flight requests finish, up to `drain_timeout`), the
background tasks stop, pools close, and the replicas stop. SIGHUP, or a change of their
files, reloads the HTTPS listener's certificates.
"""

from __future__ import annotations

import asyncio
import logging
import random
import resource
import signal
import socket

import ringlb
from ringlb.admin.api import AdminAPI
from ringlb.admin.observability import ObservabilityRoutes
from ringlb.clock import SystemClock
from ringlb.config import Settings, SettingsError
from ringlb.control.autoscaler import Autoscaler, ScalingRules
from ringlb.control.cluster import Cluster
from ringlb.control.health import HeartbeatMonitor, HeartbeatProber
from ringlb.control.membership import ReplicaSet
from ringlb.control.outliers import OutlierRules
from ringlb.control.supervisor import Backoff, Supervisor
from ringlb.dataplane.acceptor import Acceptor
from ringlb.dataplane.connection import ADMIN_ONLY, BOTH, PROXY_ONLY
from ringlb.dataplane.redirect import HttpsRedirect
from ringlb.dataplane.tls import CertificateError, Certificates
from ringlb.lifecycle import BackgroundTasks, Teardown
from ringlb.memory import freeze_start_up_heap
from ringlb.policies import capacity_error, make_policy
from ringlb.runtimes import Runtime
from ringlb.workers.plane import DataPlane, upstream_tls
from ringlb.workers.pool import WorkerPool

log = logging.getLogger("ringlb")

# Descriptors kept for replica connections, probes, logs and the listeners themselves.
RESERVED_DESCRIPTORS = 512
CERTIFICATE_WATCH = 2.0  # seconds between looks at the HTTPS certificate files


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


def make_runtime(settings: Settings) -> Runtime:
    """Returns the runtime selected by `settings.runtime`, configured from `settings`."""
    if settings.runtime == "process":
        from ringlb.runtimes.process import ProcessRuntime

        return ProcessRuntime(command=settings.replica_command)
    if settings.runtime in ("docker", "swarm"):
        from ringlb.runtimes.engine import Containment, Engine

        engine = Engine(settings.docker_image, settings.docker_api_timeout)
        containment = Containment(
            memory=settings.docker_memory,
            cpus=settings.docker_cpus,
            pids=settings.docker_pids,
            read_only=settings.docker_read_only,
        )
    if settings.runtime == "docker":
        from ringlb.runtimes.docker import DockerRuntime

        return DockerRuntime(
            engine,
            network=settings.docker_network,
            owner=settings.docker_owner,
            containment=containment,
            keep_dead=settings.docker_keep_dead,
        )
    if settings.runtime == "swarm":
        from ringlb.runtimes.swarm import SwarmRuntime

        return SwarmRuntime(
            engine,
            network=settings.docker_network,
            owner=settings.docker_owner,
            containment=containment,
            constraints=settings.swarm_constraints,
            poll_interval=settings.swarm_poll_interval,
            image_by_id=settings.swarm_image_by_id,
            start_timeout=settings.replica_start_timeout,
        )
    raise ValueError(f"runtime: unknown runtime {settings.runtime!r}")


class Balancer:
    """The running balancer: `start()` returns once it serves, `stop()` undoes everything."""

    def __init__(self, settings: Settings, runtime: Runtime | None = None) -> None:
        self.settings = settings
        rng = random.Random(settings.seed)
        clock = SystemClock()
        self.runtime = runtime or make_runtime(settings)
        self.prober = HeartbeatProber(settings.heartbeat_timeout, upstream_tls(settings))
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
            clock=clock,
        )
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.admin = AdminAPI(self.replicaset, token, settings.admin_protect_reads)
        # Several balancers on the replicas of one engine (swarm): a lease picks the leader.
        store = self.runtime.lease_store()
        self.cluster = (
            Cluster(
                store,
                self.replicaset,
                self.runtime,
                self.prober.probe,
                name=settings.balancer_name or socket.gethostname(),
                lease_time=settings.lease_time,
                renew_interval=settings.lease_renew_interval,
                sync_interval=settings.swarm_poll_interval,
                write_timeout=settings.replica_start_timeout + settings.drain_timeout,
                clock=clock,
            )
            if store is not None
            else None
        )
        if self.cluster is not None:
            self.admin.relay = self.cluster.relay

        # The data plane (with --workers N, the workers have theirs; this one stays idle
        # and its counters hold the workers' sums when /metrics or /status is read).
        self.certificates: Certificates | None = None
        if settings.tls_port is not None:
            try:
                self.certificates = Certificates(
                    settings.tls_cert, settings.tls_key, settings.tls_min_version
                )
            except CertificateError as exc:
                raise SettingsError(f"invalid {exc}") from None
        plane = DataPlane(
            settings,
            self.replicaset,
            self.admin,
            rng.random(),
            connection_cap(settings.max_connections),
        )
        self.pools, self.forwarder, self.sweep = plane.pools, plane.forwarder, plane.sweep
        self.listener = plane.listener
        self.replicaset.on_forget.append(self.pools.forget)

        # The control plane's loops.
        self.monitor = HeartbeatMonitor(
            self.replicaset,
            self.prober.probe,
            settings.heartbeat_interval,
            settings.heartbeat_misses,
            clock,
        )
        self.supervisor = Supervisor(
            self.replicaset,
            Backoff(
                settings.respawn_backoff,
                settings.respawn_backoff_max,
                settings.respawn_stable_after,
                clock,
            ),
            clock,
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
                clock,
            )
            if settings.autoscale
            else None
        )
        self.observability = ObservabilityRoutes(
            self.replicaset, self.forwarder, self.supervisor, self.autoscaler, self.cluster
        )
        self.admin.mount(self.observability.routes)
        self.workers: WorkerPool | None = None
        self.tasks = BackgroundTasks()
        self._teardown = Teardown()
        self.server: Acceptor | None = None
        self.admin_server: Acceptor | None = None
        self.tls_server: Acceptor | None = None

    @property
    def port(self) -> int:
        if self.workers is not None:
            return self.workers.port
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    @property
    def tls_port(self) -> int:
        assert self.tls_server is not None
        return self.tls_server.sockets[0].getsockname()[1]

    def reload_certificates(self) -> None:
        """Reads the HTTPS listener's certificate files again (SIGHUP): new handshakes get
        them, open connections keep theirs; on an error the old ones stay."""
        if self.certificates is not None:
            self.certificates.reload()

    async def start(self) -> None:
        """Adopts or starts the initial replicas, then listens. Raises if that fails,
        having undone whatever it had done."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        settings, rs, undo, tasks = self.settings, self.replicaset, self._teardown, self.tasks
        undo.defer("runtime", self.runtime.close)
        undo.defer("membership", rs.shutdown)
        leading = await self._join_cluster()
        if leading:
            await self._adopt()
        undo.defer("upstream pools", self.pools.close)
        undo.defer("background tasks", tasks.cancel_all)
        # Deaths are watched before the first start, so a replica that dies while starting
        # fails its start at once instead of after the start timeout.
        tasks.spawn("runtime-events", self._forward_runtime_deaths(), vital=False)
        tasks.spawn("deadline-sweep", self.sweep.run(), vital=True)
        if leading:
            names = [n for n in settings.initial_hostnames() if n not in rs.names()]
            async with rs.lock:
                await rs.spawn(names[: rs.missing()])
        tasks.spawn("heartbeat-monitor", self.monitor.run(), vital=True)
        if self.cluster is not None:
            tasks.spawn("lease", self.cluster.lease.run(), vital=True)
            tasks.spawn("cluster", self.cluster.run(self._take_over), vital=True)
        if leading:
            self._lead()
        if self.certificates is not None:
            tasks.spawn("certificate-watch", self._watch_certificates(), vital=False)
        if settings.worker_count() > 1:
            await self._start_workers(settings.worker_count())
            return
        split = settings.admin_port is not None
        undo.defer("listeners", lambda: self.listener.drain(settings.drain_timeout))
        if self.certificates is not None:
            self.tls_server = await self.listener.listen(
                settings.host,
                settings.tls_port or 0,
                PROXY_ONLY if split else BOTH,
                tls=self.certificates.context,
            )
            log.info("HTTPS listener on https://%s:%d", settings.host, self.tls_port)
        redirect = HttpsRedirect(self.tls_port) if settings.tls_redirect else None
        self.server = await self.listener.listen(
            settings.host, settings.port, PROXY_ONLY if split else BOTH, forwarder=redirect
        )
        if split:
            assert settings.admin_port is not None
            self.admin_server = await self.listener.listen(
                settings.admin_host, settings.admin_port, ADMIN_ONLY
            )
            address = self.admin_server.sockets[0].getsockname()
            log.info("admin API on its own listener: http://%s:%d", address[0], address[1])
        self._announce(self.port)

    async def _join_cluster(self) -> bool:
        """Returns whether this balancer runs the replicas: it is alone with them, or the
        lease makes it the leader of the balancers that share them."""
        if self.cluster is None:
            return True
        self._teardown.defer("cluster", self.cluster.close)
        port = self.settings.admin_port or self.settings.port
        host = await self.runtime.own_address() or socket.gethostbyname(socket.gethostname())
        await self.cluster.join(self.settings.balancer_address or f"{host}:{port}")
        lease = self.cluster.lease
        log.info("balancer %s is the %s (leader: %s)", lease.name, lease.role.value, lease.leader)
        return self.cluster.leading

    async def _adopt(self) -> int:
        """Takes the replicas the runtime already runs into the membership and sets the
        target: the one the cluster's last leader published, else the settings' (or more,
        when more run). Returns how many were adopted."""
        rs = self.replicaset
        adopted = await self.runtime.adopt()
        async with rs.lock:
            rs.follow(adopted, "adopted")
        if adopted:
            log.info("adopted %d replica(s): %s", len(adopted), ", ".join(rs.names()))
        record = self.cluster.lease.record if self.cluster is not None else None
        if record is not None and record.target is not None:
            rs.target = record.target
        else:
            rs.target = max(self.settings.replicas, len(adopted))
        return len(adopted)

    def _lead(self) -> None:
        """Starts what only the balancer that runs the replicas does: replace the dead, and
        scale."""
        self.tasks.spawn("supervisor", self.supervisor.run(), vital=True)
        if self.autoscaler is not None:
            self.tasks.spawn("autoscaler", self.autoscaler.run(), vital=False)

    async def _take_over(self) -> None:
        """Becomes the balancer that runs the replicas (the lease made this follower the
        leader): adopts them, then starts the missing ones."""
        adopted = await self._adopt()
        log.warning(
            "leading now: took over %d replica(s), target %d", adopted, self.replicaset.target
        )
        self._lead()
        await self.supervisor.reconcile()

    async def _watch_certificates(self) -> None:
        """Reloads the HTTPS certificates when their files change (as SIGHUP does)."""
        assert self.certificates is not None
        while True:
            await asyncio.sleep(CERTIFICATE_WATCH)
            self.certificates.reload_if_changed()

    async def _start_workers(self, count: int) -> None:
        """Starts `count` worker processes that accept on the port (this one does not)."""
        settings = self.settings
        self.workers = pool = WorkerPool(
            settings,
            self.replicaset,
            self.admin,
            self.forwarder,
            count,
            self.listener.max_connections,
        )
        self.observability.sections["workers"] = pool.describe
        self._teardown.defer("workers", pool.stop)
        await pool.start()
        self._announce(pool.port, count)

    def _announce(self, port: int, workers: int = 1) -> None:
        """Logs the start-up line: where the balancer listens, and with what."""
        settings, rs = self.settings, self.replicaset
        log.info(
            "ringlb listening on http://%s:%d%s (runtime=%s, policy=%s, replicas=%s, admin %s,"
            " hot path %s)",
            settings.host,
            port,
            f" with {workers} workers" if workers > 1 else "",
            self.runtime.name,
            rs.policy.name,
            ",".join(rs.snapshot.names()),
            "token required" if settings.admin_token else "open",
            ringlb.BUILD,
        )

    async def _forward_runtime_deaths(self) -> None:
        async for name in self.runtime.deaths():
            self.replicaset.report_death(name)

    async def stop(self) -> list[str]:
        """Undoes everything `start` did, in reverse, going on past failures; returns a
        line for each failure (each is logged as it happens)."""
        failures = await self._teardown.close()
        if failures:
            log.error("ringlb stopped with %d failure(s)", len(failures))
        else:
            log.info("ringlb stopped")
        return failures


async def serve(settings: Settings) -> int:
    """Runs the balancer until SIGTERM or SIGINT (exit status 0), or until a vital part of
    it fails (1); then drains and shuts it down."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    balancer = Balancer(settings)
    loop.add_signal_handler(signal.SIGHUP, balancer.reload_certificates)
    await balancer.start()  # on failure it has undone itself, and raises
    freeze_start_up_heap()
    return await run_until(balancer, stop)


async def run_until(balancer: Balancer, stop: asyncio.Event) -> int:
    """Serves until `stop` is set (returns 0) or a vital part fails (1), then stops the
    balancer (1 as well if stopping failed)."""
    status = 0
    fatal = balancer.tasks.fatal
    try:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(fatal.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if fatal.is_set():
            log.error("stopping: %s", balancer.tasks.fatal_reason)
            status = 1
        else:
            log.info("shutting down")
    finally:
        if await balancer.stop():
            status = 1
    return status
