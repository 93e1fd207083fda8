"""WorkerPool: the control process's side of `--workers N`.

The control process keeps the one membership (ReplicaSet, health, supervisor, admin
writes) and does not accept clients itself: N worker processes do, each on its own
SO_REUSEPORT socket of the port, with its own event loop and upstream pools. So the
control loop never competes with requests (a heartbeat or an /add is not delayed by
load), every worker is alike, and a worker that dies is replaced like any other while the
kernel sends new connections to the rest.

- Each membership change is pushed to every worker at once (a `membership` message, not
  per request); a worker acknowledges with `built` once its table is complete, and
  `ReplicaSet.settled` (so `/add` and `PUT /policy`) waits for every worker's ack.
- A costly table (Maglev's) is built here once and sent to every worker (`table`, after a
  membership that says `table_follows`); workers do not build it. This process is idle
  when a change comes, while the workers share the cores with the load, so a joining
  replica gets traffic from every worker sooner, and the table is built once instead of
  N + 1 times.
- Admin requests reach whichever worker the kernel chose; it relays them here, where the
  AdminAPI answers them. Before `/metrics` and `/status`, the counters of every worker are
  fetched and summed into this process's replicas and forwarder, which serve no traffic.
- An ejection or an outlier seen by one worker is reported here and pushed to all.
- The port is held by a bound, non-listening socket of this process, so a port of 0 (any
  free one) is the same for every worker and a replaced worker binds it again.
- Stopping: SIGTERM to every worker (each drains its clients), SIGKILL past the drain
  timeout. Workers die with this process even when it is killed (parent-death signal).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ringlb.admin.api import AdminAPI
from ringlb.children import Child, spawn
from ringlb.config import Settings
from ringlb.control.membership import MemberState, ReplicaSet
from ringlb.dataplane.forward import Forwarder
from ringlb.dataplane.routing import LocalAnswer
from ringlb.model import Replica, Snapshot
from ringlb.policies import Policy, describe_policy
from ringlb.policies.base import shares_tables, table_to_share
from ringlb.replica.lifeline import PARENT_PID_ENV
from ringlb.workers.channel import Channel, ChannelClosed, Message

log = logging.getLogger("ringlb.workers")

START_TIMEOUT = 30.0  # a worker's interpreter start and listen (s)
RESPAWN_DELAY = 0.5  # before replacing a dead worker: a crash loop stays slow
ACK_TIMEOUT = 5.0  # longest wait for a worker's table (a wedged one is logged, not waited on)
COUNTERS_TIMEOUT = 2.0
STOP_MARGIN = 5.0  # beyond the drain timeout, before a worker is killed
SUMMED_PATHS = frozenset({"/metrics", "/status"})


def policy_spec(policy: Policy) -> dict[str, Any]:
    """Returns `{"name", "options"}` that `make_policy` turns back into `policy`."""
    description = describe_policy(policy)
    options = dict(description["options"])
    if not options.get("bounded"):
        options.pop("bounded", None)
        options.pop("load_factor", None)
    return {"name": description["name"], "options": options}


@dataclass(eq=False)
class WorkerProcess:
    index: int
    process: Child
    channel: Channel
    reading: asyncio.Future[None] | None = None
    ready: bool = False
    built: int = 0  # the last membership version whose table is complete there
    pushed_at: dict[int, float] = field(default_factory=dict)
    reach: float | None = None  # push to routing on it (leavers out), last change (s)
    propagation: float | None = None  # push to complete table, last change (s)
    answered: int = 0  # answers relayed by it, as of the last sum of counters
    tables_taken: int = 0  # tables it took from this process (see _share_table)
    pushed: int = 0  # the last membership version pushed to it


class WorkerPool:
    def __init__(
        self,
        settings: Settings,
        replicaset: ReplicaSet,
        admin: AdminAPI,
        forwarder: Forwarder,
        count: int,
        max_connections: int,
    ) -> None:
        self._settings = settings
        self._rs = replicaset
        self._admin = admin
        self._forwarder = forwarder
        self.count = count
        self._max_connections = max_connections
        self._rng = random.Random(settings.seed)
        self._workers: dict[int, WorkerProcess] = {}
        self._placeholders: list[socket.socket] = []
        self._keepers: list[asyncio.Task[None]] = []
        self._progress = asyncio.Event()
        self._table: Message | None = None  # the last table shared (see _share_table)
        self._stopping = False
        self.port = settings.port
        self.admin_port = settings.admin_port

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Starts the workers; returns once every one listens. Raises if one cannot."""
        settings = self._settings
        self.port = self._hold(settings.host, settings.port)
        if settings.admin_port is not None:
            self.admin_port = self._hold(settings.admin_host, settings.admin_port)
        rs = self._rs
        rs.on_change.append(self._push_all)
        rs.tables.on_complete.append(self._share_table)
        if rs.tables.complete.is_set():  # built before this pool: the workers' first table
            self._share_table(rs.snapshot)
        rs.followers.append(self._wait_built)
        rs.drains.append(self._drain)
        started = await asyncio.gather(
            *(self._start(i) for i in range(self.count)), return_exceptions=True
        )
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            raise RuntimeError(f"a worker failed to start: {failed[0]}")
        for index in range(self.count):
            self._keepers.append(asyncio.ensure_future(self._keep(index)))

    def _hold(self, host: str, port: int) -> int:
        """Binds (without listening) a SO_REUSEPORT socket on `host:port`; returns the port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        self._placeholders.append(sock)
        return sock.getsockname()[1]

    async def _start(self, index: int) -> WorkerProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = spawn(
                [sys.executable, "-m", "ringlb.workers", str(theirs.fileno())],
                env={**os.environ, PARENT_PID_ENV: str(os.getpid())},
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        channel = await Channel.over(ours)
        worker = WorkerProcess(index, process, channel)
        worker.reading = asyncio.ensure_future(
            channel.serve(lambda message: self._handle(worker, message))
        )
        self._workers[index] = worker
        hello = channel.question(
            {
                "op": "hello",
                "settings": self._worker_settings(),
                "paths": sorted(self._admin.paths),
                "port": self.port,
                "admin_port": self.admin_port,
                "key_seed": self._rng.random(),
                "max_connections": self._max_connections,
            }
        )
        self._push(worker)  # behind the hello on the channel: the first table to build
        try:
            answer = await asyncio.wait_for(hello, START_TIMEOUT)
        except (TimeoutError, ChannelClosed) as exc:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise RuntimeError(f"worker {index} did not start: {exc!r}") from None
        worker.ready = True
        log.info("worker %d serving (pid %d)", index, answer["pid"])
        return worker

    def _worker_settings(self) -> dict[str, Any]:
        # The token stays here (workers relay the Authorization header); the config file
        # was read here, and its values are in the dump.
        dump = self._settings.model_dump(mode="json", exclude={"admin_token", "config"})
        dump["workers"] = 1
        return dump

    async def _keep(self, index: int) -> None:
        """Replaces worker `index` whenever it exits, until the pool stops."""
        while not self._stopping:
            worker = self._workers.get(index)
            if worker is not None:
                status = await worker.process.wait()
                self._forget(worker)
                self._progressed()  # it no longer holds up `settled`
                if self._stopping:
                    return
                log.warning(
                    "worker %d (pid %d) exited %s: replacing it", index, worker.process.pid, status
                )
                del self._workers[index]
            await asyncio.sleep(RESPAWN_DELAY)
            if self._stopping:
                return
            try:
                await self._start(index)
            except RuntimeError as exc:
                log.error("%s; trying again", exc)
                self._workers.pop(index, None)

    async def stop(self) -> None:
        """Stops every worker (draining its clients) and releases the port."""
        self._stopping = True
        rs = self._rs
        for hooks, hook in (
            (rs.on_change, self._push_all),
            (rs.followers, self._wait_built),
            (rs.drains, self._drain),
        ):
            with contextlib.suppress(ValueError):
                hooks.remove(hook)  # type: ignore[arg-type]
        workers = list(self._workers.values())
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        timeout = self._settings.drain_timeout + STOP_MARGIN
        await asyncio.gather(*(self._reap(w, timeout) for w in workers))
        for keeper in self._keepers:
            keeper.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        for sock in self._placeholders:
            sock.close()
        self._placeholders.clear()

    async def _reap(self, worker: WorkerProcess, timeout: float) -> None:
        try:
            await asyncio.wait_for(worker.process.wait(), timeout)
        except TimeoutError:
            log.error("worker %d did not stop within %g s: killed", worker.index, timeout)
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()
        self._forget(worker)

    def _forget(self, worker: WorkerProcess) -> None:
        worker.channel.close()
        if worker.reading is not None:
            worker.reading.cancel()

    # -- membership, pushed ----------------------------------------------------------

    def _membership(self) -> Message:
        rs = self._rs
        return {
            "op": "membership",
            "version": rs.snapshot.version,
            "policy": policy_spec(rs.policy),
            "members": [
                [r.name, r.rid, r.host, r.port, r.weight, state is MemberState.SERVING]
                for r, state in rs.members()
            ],
            # A table over no replica is empty: nothing to share.
            "table_follows": shares_tables(rs.policy) and bool(rs.members_in(MemberState.SERVING)),
        }

    def _push_all(self) -> None:
        message = self._membership()
        for worker in list(self._workers.values()):
            self._push(worker, message)

    def _share_table(self, snapshot: Snapshot) -> None:
        """Sends the complete snapshot's table, when it has one to share, to the workers
        its membership was pushed to (the others get it behind the push, see `_push`)."""
        table = table_to_share(snapshot.picker)
        if table is None:
            return
        self._table = {
            "op": "table",
            "version": snapshot.version,
            "table": base64.b64encode(table).decode("ascii"),
        }
        for worker in list(self._workers.values()):
            if worker.pushed == snapshot.version:
                with contextlib.suppress(ChannelClosed):
                    worker.channel.tell(self._table)

    def _push(self, worker: WorkerProcess, message: Message | None = None) -> None:
        message = message or self._membership()
        worker.pushed_at[message["version"]] = time.monotonic()
        worker.pushed = message["version"]
        with contextlib.suppress(ChannelClosed):
            worker.channel.tell(message)
            if self._table is not None and self._table["version"] == worker.pushed:
                worker.channel.tell(self._table)  # built before this push

    async def _wait_built(self, version: int) -> None:
        """Returns once every serving worker's table holds membership `version`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACK_TIMEOUT
        while True:
            progress = self._progress  # taken before the check: no wake-up is lost
            behind = [w for w in self._live() if w.built < version]
            if not behind:
                return
            left = deadline - loop.time()
            if left <= 0:
                log.warning(
                    "worker(s) %s still build version %d after %g s",
                    ", ".join(str(w.index) for w in behind),
                    version,
                    ACK_TIMEOUT,
                )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), left)

    async def _drain(self, leaving: Sequence[Replica], seconds: float) -> None:
        names = [r.name for r in leaving]
        question = {"op": "drain", "names": names, "timeout": seconds}
        asks = [w.channel.ask(question, seconds + 1) for w in self._live()]
        await asyncio.gather(*asks, return_exceptions=True)

    def _progressed(self) -> None:
        """Wakes every `_wait_built`, which looks again at what each worker has built."""
        self._progress.set()
        self._progress = asyncio.Event()

    def _live(self) -> list[WorkerProcess]:
        return [w for w in self._workers.values() if w.ready and w.process.returncode is None]

    # -- what workers send -----------------------------------------------------------

    def _handle(self, worker: WorkerProcess, message: Message) -> Any:
        op = message["op"]
        if op == "built":
            version = message["version"]
            worker.built = max(worker.built, version)
            worker.tables_taken = message["tables_taken"]
            pushed = worker.pushed_at.pop(version, None)
            if pushed is not None:
                worker.reach = message["applied"] - pushed
                worker.propagation = message["complete"] - pushed
            for old in [v for v in worker.pushed_at if v < version]:
                del worker.pushed_at[old]
            self._progressed()
            return None
        if op in ("eject", "outlier"):
            replica = self._member(message["name"], message["rid"])
            if replica is not None:
                (self._rs.eject if op == "eject" else self._rs.eject_outlier)(replica)
            return None
        if op == "admin":
            return self._relay(worker, message)
        log.warning("worker %d sent an unknown message %r", worker.index, op)
        return None

    def _member(self, name: str, rid: int) -> Replica | None:
        for replica, _ in self._rs.members():
            if replica.name == name and replica.rid == rid:
                return replica
        return None

    async def _relay(self, worker: WorkerProcess, message: Message) -> None:
        path = message["path"]
        if path in SUMMED_PATHS:
            await self.sum_counters()
        authorization = message["authorization"]
        answer: LocalAnswer = await self._admin.handle(
            message["method"],
            path,
            message["body"].encode("latin-1"),
            authorization.encode("latin-1") if authorization is not None else None,
        )
        worker.channel.answer(
            message,
            {
                "status": answer.status,
                "body": answer.body.decode("latin-1"),
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in answer.headers],
                "content_type": answer.content_type.decode("latin-1"),
            },
        )

    async def sum_counters(self) -> None:
        """Sets this process's replica and forwarder counters to the sums over workers."""
        live = self._live()
        asks = [w.channel.ask({"op": "counters"}, COUNTERS_TIMEOUT) for w in live]
        answers = []
        results = await asyncio.gather(*asks, return_exceptions=True)
        for worker, answer in zip(live, results, strict=True):
            if isinstance(answer, dict):
                answers.append(answer)
                worker.answered = sum(sum(row[2]) for row in answer["replicas"])
        by_member = {(r.name, r.rid): r for r, _ in self._rs.members()}
        for replica in by_member.values():
            replica.answers = [0] * len(replica.answers)
            replica.latency_counts = [0] * len(replica.latency_counts)
            replica.latency_sum = 0.0
            replica.inflight = 0
        forwarder = self._forwarder
        totals = dict.fromkeys(("retries", "all_failed", "no_replica", "overloaded"), 0)
        for answer in answers:
            for name, rid, answered, latency, latency_sum, inflight in answer["replicas"]:
                replica = by_member.get((name, rid))
                if replica is None:
                    continue
                replica.answers = [a + b for a, b in zip(replica.answers, answered, strict=True)]
                replica.latency_counts = [
                    a + b for a, b in zip(replica.latency_counts, latency, strict=True)
                ]
                replica.latency_sum += latency_sum
                replica.inflight += inflight
            for key in totals:
                totals[key] += answer["forwarder"][key]
        for key, value in totals.items():
            setattr(forwarder, key, value)

    def describe(self) -> list[dict[str, Any]]:
        """Returns each worker's pid, state and how long the last change took to reach it
        (`reach_ms`: routed on, leavers out) and to be in its complete table
        (`propagation_ms`), and how many of its tables came from this process
        (`tables_taken`), for /status."""
        return [
            {
                "index": w.index,
                "pid": w.process.pid,
                "serving": w.ready and w.process.returncode is None,
                "version": w.built,
                "answered": w.answered,
                "reach_ms": _ms(w.reach),
                "propagation_ms": _ms(w.propagation),
                "tables_taken": w.tables_taken,
            }
            for w in sorted(self._workers.values(), key=lambda w: w.index)
        ]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 2)
