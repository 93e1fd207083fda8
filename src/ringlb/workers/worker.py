"""A worker process of `--workers N`: a data plane of its own on the shared port, routing on
the membership the control process pushes, relaying admin requests to it.

Started by `WorkerPool` as `python -m ringlb.workers <fd>`, with one end of a socket pair
on descriptor `fd`. The first message (`hello`) carries the settings and the admin paths;
the worker listens (SO_REUSEPORT), then answers it. After that:
- `membership` (every member with its ring id, address, weight and whether it serves, and
  the policy) is routed on at once (leavers skipped) and rebuilds the table here, in
  slices (`TableBuilder`); `built` acknowledges it once complete. The table is a function
  of the membership, so every worker sends a key to the same replica.
- A costly table (Maglev's) is not built here: the membership says `table_follows`, this
  worker routes on the interim snapshot (leavers skipped), and the `table` message that
  follows (the control process's table of that membership) completes it.
- `drain` waits until no request of this worker is open on the named replicas (`/rm`).
- `counters` answers this worker's counters (summed by the control process for
  `/metrics` and `/status`).
A hard failure of a replica is taken out of this worker's table at once and reported
(`eject`); errors in a row are counted here and reported once they make an outlier.
SIGTERM or the end of the channel drains the listeners and ends the worker; SIGINT is
the control process's to act on (Ctrl-C reaches the whole process group).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from ringlb import contract
from ringlb.config import Settings
from ringlb.control.outliers import OutlierRules
from ringlb.control.tables import TableBuilder
from ringlb.dataplane.connection import ADMIN_ONLY, BOTH, PROXY_ONLY
from ringlb.dataplane.routing import LocalAnswer
from ringlb.eventloop import install_fast_loop
from ringlb.logformat import configure_logging
from ringlb.memory import freeze_start_up_heap
from ringlb.model import Replica, Snapshot
from ringlb.policies import Policy, make_policy
from ringlb.policies.base import picker_from_shared
from ringlb.replica.lifeline import die_with_parent
from ringlb.workers.channel import Channel, ChannelClosed, Message
from ringlb.workers.plane import DataPlane

log = logging.getLogger("ringlb.worker")

DRAIN_POLL = 0.01


def policy_of(spec: dict[str, Any]) -> Policy:
    """Returns the policy a `membership` message names (see `pool.policy_spec`)."""
    return make_policy(spec["name"], **spec["options"])


class PushedMembership:
    """The membership pushed by the control process, as this worker's `Routing`."""

    def __init__(self, channel: Channel, outliers: OutlierRules) -> None:
        self._channel = channel
        self._outliers = outliers
        self._replicas: dict[str, Replica] = {}
        self._serving: tuple[Replica, ...] = ()
        self._spec: dict[str, Any] | None = None
        self._policy: Policy = make_policy("round_robin")
        self._version = 0  # local snapshots (a push, or an ejection here)
        self.pushed = 0  # the control process's version of the last push
        self._pushed_as = 0  # the local version of that push (an ejection here moves on)
        self.tables_taken = 0  # builds ended with the control process's table
        self.snapshot: Snapshot
        self.tables = TableBuilder(self._policy, self._set_snapshot)
        self.forgotten: list[Replica] = []  # replicas that left for good (pools to close)

    def _set_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def replica(self, name: str, rid: int) -> Replica | None:
        replica = self._replicas.get(name)
        return replica if replica is not None and replica.rid == rid else None

    def replicas(self) -> list[Replica]:
        return list(self._replicas.values())

    def apply(self, message: Message) -> list[Replica]:
        """Routes on the pushed membership; returns the replicas that left for good."""
        if message["policy"] != self._spec:
            self._policy, self._spec = policy_of(message["policy"]), message["policy"]
        members: dict[str, Replica] = {}
        serving = []
        for name, rid, host, port, weight, is_serving in message["members"]:
            replica = self.replica(name, rid) or Replica(name, rid, host, port, weight)
            replica.host, replica.port = host, port
            members[name] = replica
            if is_serving:
                serving.append(replica)
        gone = [r for name, r in self._replicas.items() if members.get(name) is not r]
        self._replicas = members
        self._serving = tuple(serving)
        self.pushed = message["version"]
        self._rebuild(elsewhere=message["table_follows"])
        self._pushed_as = self._version
        return gone

    def adopt_table(self, message: Message) -> bool:
        """Completes the table of the last push with the control process's, if this worker
        still routes on that push; returns whether it did."""
        if message["version"] != self.pushed or self._version != self._pushed_as:
            return False  # a newer push, or an ejection here (built here), supersedes it
        picker = picker_from_shared(self._policy, self._serving, base64.b64decode(message["table"]))
        if picker is None or not self.tables.adopt(self._version, picker):
            return False
        self.tables_taken += 1
        return True

    def _rebuild(self, elsewhere: bool = False) -> None:
        self._version += 1
        self.tables.rebuild(self._version, self._serving, self._policy, elsewhere)

    def eject(self, replica: Replica) -> None:
        if replica not in self._serving:
            return
        self._serving = tuple(r for r in self._serving if r is not replica)
        self._rebuild()  # at once here; the control process tells every worker
        self._report("eject", replica)

    def report_error(self, replica: Replica) -> None:
        replica.errors_in_row += 1
        if self._outliers.is_outlier(replica.errors_in_row):
            replica.errors_in_row = 0
            self._report("outlier", replica)

    def _report(self, op: str, replica: Replica) -> None:
        try:
            self._channel.tell({"op": op, "name": replica.name, "rid": replica.rid})
        except ChannelClosed:
            log.warning("cannot report %s of %s: the control process is gone", op, replica.name)


class RelayedEndpoints:
    """The admin endpoints, answered by the control process (the one membership)."""

    def __init__(self, channel: Channel, paths: frozenset[str]) -> None:
        self._channel = channel
        self.paths = paths

    async def handle(
        self, method: str, path: str, body: bytes, authorization: bytes | None
    ) -> LocalAnswer:
        question = {
            "op": "admin",
            "method": method,
            "path": path,
            "body": body.decode("latin-1"),
            "authorization": authorization.decode("latin-1") if authorization else None,
        }
        try:
            answer = await self._channel.ask(question)
        except ChannelClosed:
            return LocalAnswer(503, contract.failure("<Error> The control process is gone"))
        return LocalAnswer(
            answer["status"],
            answer["body"].encode("latin-1"),
            [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer["headers"]],
            answer["content_type"].encode("latin-1"),
        )


class Worker:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.routing: PushedMembership | None = None
        self.plane: DataPlane | None = None
        self.settings: Settings | None = None
        self.stop = asyncio.Event()

    def handle(self, message: Message) -> Any:
        op = message["op"]
        if op == "hello":
            self._assemble(message)
            return self._listen(message)
        assert self.routing is not None and self.plane is not None
        if op == "membership":
            applied = time.monotonic()  # routed on from here (leavers skipped at once)
            for replica in self.routing.apply(message):
                self.plane.pools.forget(replica)
            return self._acknowledge(message["version"], applied)
        if op == "table":
            self.routing.adopt_table(message)
            return None
        if op == "drain":
            return self._drain(message)
        if op == "counters":
            self.channel.answer(message, self._counters())
            return None
        log.warning("unknown message %r", op)
        return None

    def _assemble(self, hello: Message) -> None:
        settings = self.settings = Settings(**hello["settings"])
        configure_logging(settings.log_level, settings.log_format)
        self.routing = PushedMembership(
            self.channel,
            OutlierRules(
                settings.outlier_consecutive_errors,
                settings.outlier_ejection_time,
                settings.outlier_max_ejections,
            ),
        )
        endpoints = RelayedEndpoints(self.channel, frozenset(hello["paths"]))
        self.plane = DataPlane(
            settings, self.routing, endpoints, hello["key_seed"], hello["max_connections"]
        )

    async def _listen(self, hello: Message) -> None:
        assert self.plane is not None and self.settings is not None
        settings, listener = self.settings, self.plane.listener
        split = hello["admin_port"] is not None
        role = PROXY_ONLY if split else BOTH
        await listener.listen(settings.host, hello["port"], role, reuse_port=True)
        if split:
            await listener.listen(
                settings.admin_host, hello["admin_port"], ADMIN_ONLY, reuse_port=True
            )
        self.channel.answer(hello, {"pid": os.getpid()})

    async def _acknowledge(self, version: int, applied: float) -> None:
        assert self.routing is not None
        await self.routing.tables.settled()
        if self.routing.pushed == version:  # else a newer push is acknowledged later
            # CLOCK_MONOTONIC is one clock for every process of the host.
            built = {
                "op": "built",
                "version": version,
                "applied": applied,
                "tables_taken": self.routing.tables_taken,
            }
            with contextlib.suppress(ChannelClosed):
                self.channel.tell({**built, "complete": time.monotonic()})

    async def _drain(self, message: Message) -> None:
        assert self.routing is not None
        names = set(message["names"])
        leaving = [r for r in self.routing.replicas() if r.name in names]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + message["timeout"]
        while any(r.inflight for r in leaving) and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        self.channel.answer(message, {})

    def _counters(self) -> Message:
        assert self.routing is not None and self.plane is not None
        forwarder = self.plane.forwarder
        return {
            "pid": os.getpid(),
            "replicas": [
                [r.name, r.rid, r.answers, r.latency_counts, r.latency_sum, r.inflight]
                for r in self.routing.replicas()
            ],
            "forwarder": {
                "retries": forwarder.retries,
                "all_failed": forwarder.all_failed,
                "no_replica": forwarder.no_replica,
                "overloaded": forwarder.overloaded,
            },
            "connections": len(self.plane.listener.clients),
        }

    async def run(self) -> None:
        assert self.plane is not None and self.settings is not None
        sweep = asyncio.ensure_future(self.plane.sweep.run())
        closed = asyncio.ensure_future(self.channel.closed.wait())
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([sweep, closed, stopping], return_when=asyncio.FIRST_COMPLETED)
        await self.plane.listener.drain(self.settings.drain_timeout)
        for task in (sweep, closed, stopping):
            task.cancel()
        self.plane.pools.close()
        assert self.routing is not None
        self.routing.tables.close()


async def run_worker(fd: int) -> int:
    """Serves until SIGTERM or the end of the channel; returns the exit status."""
    loop = asyncio.get_running_loop()
    channel = await Channel.over(socket.socket(fileno=fd))
    worker = Worker(channel)
    loop.add_signal_handler(signal.SIGTERM, worker.stop.set)
    reading = asyncio.ensure_future(channel.serve(worker.handle))
    while worker.plane is None and not reading.done():
        await asyncio.sleep(0.01)
    if worker.plane is None:
        return 1
    freeze_start_up_heap()
    await worker.run()
    channel.close()
    reading.cancel()
    return 0


def main() -> int:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    install_fast_loop()
    return asyncio.run(run_worker(int(sys.argv[1])))
