"""ReplicaSet: the single writer of membership, and the publisher of routing snapshots.

Every change (add, remove, ejection, death, respawn) goes through here. Multi-step changes
(`spawn`, `retire`) run under `lock`; each state change itself is synchronous, so it is
atomic on the event loop, and ends by publishing a new immutable `Snapshot` built from the
current state. The data plane reads `replicaset.snapshot` and reports failed replicas
(`eject`) and 5xx answers (`report_error`): it sees the ReplicaSet as its `Routing`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ringlb import contract
from ringlb.clock import Clock, SystemClock
from ringlb.contract import ContractError, MembershipRequest
from ringlb.control.outliers import OutlierRules
from ringlb.control.tables import TableBuilder
from ringlb.model import Replica, Snapshot
from ringlb.policies import Policy
from ringlb.runtimes import RunningReplica, Runtime, RuntimeFailure

log = logging.getLogger("ringlb.replicaset")

Probe = Callable[[Replica], Awaitable[bool]]

READY_POLL = 0.05  # how often a starting replica's heartbeat is tried
DRAIN_POLL = 0.01  # how often a drain checks for requests still in flight
EVENT_HISTORY = 100  # membership events kept for the status page


class MemberState(enum.Enum):
    STARTING = "starting"  # launched, not yet answering its heartbeat: not routed to
    SERVING = "serving"  # in the ring
    EJECTED = "ejected"  # out of the ring after a hard failure, until a probe decides
    OUTLIER = "outlier"  # out of the ring after errors in a row, for a back-off period
    DOWN = "down"  # dead; waits for the supervisor to delete and replace it
    RETIRING = "retiring"  # being removed by /rm: out of the ring, draining


# What /rm may remove: every replica that runs, whether or not it is in the ring now.
REMOVABLE = (MemberState.SERVING, MemberState.EJECTED, MemberState.OUTLIER, MemberState.DOWN)


@dataclass(eq=False)
class Member:
    replica: Replica
    state: MemberState
    died: asyncio.Event = field(default_factory=asyncio.Event)
    outlier_until: float = 0.0  # monotonic time at which an outlier may serve again
    outlier_ejections: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """One membership event: `kind` (joined, ejected, readmitted, down, removed, respawned,
    adopted) happened to `replica` at wall-clock `time`."""

    time: float
    kind: str
    replica: str
    detail: str = ""


def replica_of(running: RunningReplica, weight: float = 1.0) -> Replica:
    """Returns a Replica for what a runtime reports running."""
    return Replica(running.name, running.rid, running.host, running.port, weight=weight)


def same_replica(replica: Replica | None, running: RunningReplica) -> bool:
    """Whether `running` is `replica` (a name reused by a new replica is another one)."""
    return replica is not None and (running.rid, running.host, running.port) == (
        replica.rid,
        replica.host,
        replica.port,
    )


class SpawnError(Exception):
    """A replica failed to start or to answer its first heartbeat."""


class ReplicaSet:
    def __init__(
        self,
        runtime: Runtime,
        policy: Policy,
        probe: Probe,
        *,
        max_replicas: int,
        start_timeout: float,
        drain_timeout: float,
        outliers: OutlierRules,
        rng: random.Random | None = None,
        weights: Mapping[str, float] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.outliers = outliers
        self._clock = clock or SystemClock()
        self._runtime = runtime
        self._policy = policy
        self._probe = probe
        self.max_replicas = max_replicas
        self._start_timeout = start_timeout
        self._drain_timeout = drain_timeout
        self._rng = rng or random.Random()
        self._weights = dict(weights or {})  # replica name -> policy weight (default 1)
        self._members: dict[str, Member] = {}  # insertion order = join order
        self._next_rid = 1
        self._version = 0
        self.lock = asyncio.Lock()
        self.target = 0
        self.dead: asyncio.Queue[str] = asyncio.Queue()  # consumed by the supervisor
        self.ejected = asyncio.Event()  # wakes the heartbeat monitor early
        # Called with each replica that leaves for good (the proxy closes its pool).
        self.on_forget: list[Callable[[Replica], None]] = []
        # Other data planes that route on this membership (worker processes): told of each
        # change, waited for by `settled` (with the version) and by a drain (with the
        # leaving replicas and the seconds left).
        self.on_change: list[Callable[[], None]] = []
        self.followers: list[Callable[[int], Awaitable[None]]] = []
        self.drains: list[Callable[[Sequence[Replica], float], Awaitable[None]]] = []
        self.snapshot: Snapshot
        # Sets `snapshot` now and at each change: tables build in slices, off the hot path.
        self.tables = TableBuilder(policy, self._set_snapshot)
        # Read by ringlb.admin.metrics and the status page.
        self.events: deque[Event] = deque(maxlen=EVENT_HISTORY)
        self.ejections = 0
        self.deaths = 0

    # -- reading -------------------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        return self._policy

    def members_in(self, *states: MemberState) -> list[tuple[Replica, MemberState]]:
        return [(m.replica, m.state) for m in self._members.values() if m.state in states]

    def members(self) -> list[tuple[Replica, MemberState]]:
        """Returns every member with its state, in join order."""
        return [(m.replica, m.state) for m in self._members.values()]

    def record_event(self, kind: str, replica: str, detail: str = "") -> None:
        """Appends an event to the bounded history (the oldest falls off)."""
        self.events.append(Event(time.time(), kind, replica, detail))

    def names(self) -> list[str]:
        """Returns every member's name, whatever its state."""
        return list(self._members)

    def generate_name(self) -> str:
        """Returns `server_` + 6 hex digits, unused by any member."""
        while True:
            name = f"server_{self._rng.getrandbits(24):06x}"
            if name not in self._members:
                return name

    # -- synchronous transitions (atomic on the event loop) ------------------------------

    def _set_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def _publish(self) -> None:
        serving = tuple(m.replica for m in self._members.values() if m.state is MemberState.SERVING)
        self._version += 1
        self.tables.rebuild(self._version, serving, self._policy)
        for callback in self.on_change:
            callback()

    async def settled(self) -> None:
        """Returns once the routing tables (here and in every follower) hold every
        membership change made so far."""
        version = self._version
        await self.tables.settled()
        for follower in self.followers:
            await follower(version)

    def set_policy(self, policy: Policy) -> None:
        """Switches the policy; requests in flight finish on the snapshot they read."""
        self._policy = policy
        self._publish()

    def eject(self, replica: Replica) -> None:
        """Takes a replica that failed a request out of the ring at once (data plane)."""
        member = self._members.get(replica.name)
        if member is None or member.replica is not replica:
            return
        if member.state is MemberState.SERVING:
            member.state = MemberState.EJECTED
            log.warning("replica %s ejected after a failed request", replica.name)
            self.ejections += 1
            self.record_event("ejected", replica.name)
            self._publish()
            self.ejected.set()

    def readmit(self, replica: Replica) -> None:
        """Puts an ejected replica that answers its heartbeat back in the ring."""
        member = self._members.get(replica.name)
        if member and member.replica is replica and member.state is MemberState.EJECTED:
            member.state = MemberState.SERVING
            log.info("replica %s answers again: back in the ring", replica.name)
            self.record_event("readmitted", replica.name)
            self._publish()

    def report_error(self, replica: Replica) -> None:
        """Counts a 5xx answer of `replica` (data plane); enough in a row make it an outlier."""
        replica.errors_in_row += 1
        if self.outliers.is_outlier(replica.errors_in_row):
            replica.errors_in_row = 0
            self.eject_outlier(replica)

    def eject_outlier(self, replica: Replica) -> None:
        """Takes a replica that keeps answering 5xx out of the ring for a back-off period.
        Never the last serving one: a struggling replica beats none."""
        member = self._members.get(replica.name)
        if member is None or member.replica is not replica:
            return
        if member.state is not MemberState.SERVING:
            return
        if sum(m.state is MemberState.SERVING for m in self._members.values()) <= 1:
            log.warning("replica %s keeps failing but is the last one serving", replica.name)
            return
        member.outlier_ejections += 1
        rules = self.outliers
        seconds = rules.ejection_seconds(member.outlier_ejections)
        if seconds is None:
            log.warning(
                "replica %s stays bad after %d ejections: replacing it",
                replica.name,
                rules.max_ejections,
            )
            self.report_death(replica.name, replica)
            return
        member.state = MemberState.OUTLIER
        member.outlier_until = self._clock.now() + seconds
        log.warning(
            "replica %s ejected for %.1f s after %d errors in a row (ejection %d)",
            replica.name,
            seconds,
            rules.consecutive_errors,
            member.outlier_ejections,
        )
        self.ejections += 1
        self.record_event("ejected", replica.name, f"outlier, {seconds:g} s")
        self._publish()

    def readmit_outliers(self) -> None:
        """Puts outliers whose back-off period is over back in the ring (health monitor)."""
        now = self._clock.now()
        back = [
            m
            for m in self._members.values()
            if m.state is MemberState.OUTLIER and m.outlier_until <= now
        ]
        for member in back:
            member.state = MemberState.SERVING
            log.info("replica %s back in the ring after its ejection", member.replica.name)
            self.record_event("readmitted", member.replica.name, "outlier")
        if back:
            self._publish()

    def report_death(self, name: str, replica: Replica | None = None) -> None:
        """Records that `name` died (runtime event, missed heartbeats or a failed probe)."""
        member = self._members.get(name)
        if member is None or (replica is not None and member.replica is not replica):
            return
        member.died.set()
        if member.state in (MemberState.SERVING, MemberState.EJECTED, MemberState.OUTLIER):
            member.state = MemberState.DOWN
            log.warning("replica %s is down", name)
            self.deaths += 1
            self.record_event("down", name)
            self._publish()
            self.dead.put_nowait(name)

    # -- membership changes (call under `lock`) ------------------------------------------

    async def spawn(self, names: Sequence[str]) -> None:
        """Starts `names`, waits for each first good heartbeat, then admits them together.

        All or nothing: if one fails, every replica started here is stopped and forgotten,
        and SpawnError names the first failure.
        """
        members = []
        for name in names:
            weight = self._weights.get(name, 1.0)
            replica = Replica(name=name, rid=self._next_rid, host="", port=0, weight=weight)
            self._next_rid += 1
            member = Member(replica, MemberState.STARTING)
            self._members[name] = member
            members.append(member)
        results = await asyncio.gather(
            *(self._start_one(m) for m in members), return_exceptions=True
        )
        failures = [(m, r) for m, r in zip(members, results, strict=True) if r is not None]
        if failures:
            await self._forget(members, force=True)
            member, error = failures[0]
            raise SpawnError(f"Replica '{member.replica.name}' failed to start: {error}")
        for member in members:
            # Re-insert so that join order is the order of admission.
            del self._members[member.replica.name]
            self._members[member.replica.name] = member
            member.state = MemberState.SERVING
        self._publish()
        await self.settled()  # "in the ring" means in a complete table
        log.info("joined: %s", ", ".join(names))
        for name in names:
            self.record_event("joined", name)

    async def _start_one(self, member: Member) -> Exception | None:
        try:
            running = await self._runtime.start(member.replica.name, member.replica.rid)
        except RuntimeFailure as exc:
            return exc
        member.replica.host, member.replica.port = running.host, running.port
        if await self._wait_ready(member):
            return None
        if member.died.is_set():
            return SpawnError("it exited before answering its heartbeat")
        return SpawnError(f"no heartbeat within {self._start_timeout:g} s")

    async def _wait_ready(self, member: Member) -> bool:
        clock = self._clock
        deadline = clock.now() + self._start_timeout
        while clock.now() < deadline and not member.died.is_set():
            if await self._probe(member.replica):
                return True
            await clock.sleep(READY_POLL)
        return False

    def follow(self, running: Sequence[RunningReplica], event: str = "joined") -> None:
        """Makes the membership `running`, starting and stopping nothing: the replicas of a
        membership another balancer leads (`ringlb.control.cluster`), or the ones this
        balancer takes over (`event` "adopted": after a restart, or as a new leader).
        Members that stay keep their state, except the dead; new ones serve at once (the
        runtime or the caller has seen them run); ring ids are counted on above every id
        seen."""
        listed = {item.name: item for item in running}
        gone = [
            m
            for name, m in self._members.items()
            if m.state is MemberState.DOWN or name not in listed
            or not same_replica(m.replica, listed[name])
        ]  # fmt: skip
        for member in gone:
            del self._members[member.replica.name]
            self.record_event("removed", member.replica.name)
        joined = [item for item in running if item.name not in self._members]
        kept = self._members
        # In the runtime's order (by ring id, which is the leader's join order), so that
        # /rep lists them alike on every balancer.
        self._members = {}
        for item in running:
            member = kept.get(item.name)
            if member is None:
                replica = replica_of(item, self._weights.get(item.name, 1.0))
                member = Member(replica, MemberState.SERVING)
                self.record_event(event, item.name)
            self._members[item.name] = member
        self._next_rid = max([self._next_rid, *(item.rid + 1 for item in running)])
        if gone or joined:
            self._publish()
        for member in gone:
            for callback in self.on_forget:
                callback(member.replica)

    async def retire(self, names: Sequence[str]) -> None:
        """Takes `names` out of the ring, lets in-flight requests finish, stops and forgets."""
        members = [self._members[n] for n in names if n in self._members]
        for member in members:
            member.state = MemberState.RETIRING
        self._publish()
        clock = self._clock
        deadline = clock.now() + self._drain_timeout
        # Tunnels (WebSocket) get the same grace, then close with the replica's pool.
        while any(m.replica.inflight or m.replica.tunnels for m in members) and (
            clock.now() < deadline
        ):
            await clock.sleep(DRAIN_POLL)
        leaving = [m.replica for m in members]
        left = max(0.0, deadline - clock.now())
        await asyncio.gather(*(drain(leaving, left) for drain in self.drains))
        await self._forget(members)
        for member in members:
            self.record_event("removed", member.replica.name)

    async def delete(self, names: Sequence[str]) -> None:
        """Kills and forgets `names` at once, without draining (they are dead or hung)."""
        members = [self._members[n] for n in names if n in self._members]
        await self._forget(members, force=True)

    def missing(self) -> int:
        """Returns how many replicas are needed to reach the target."""
        return max(0, self.target - len(self._members))

    async def _forget(self, members: Sequence[Member], force: bool = False) -> None:
        await asyncio.gather(*(self._runtime.stop(m.replica.name, force) for m in members))
        for member in members:
            if self._members.get(member.replica.name) is member:
                del self._members[member.replica.name]
        self._publish()
        for member in members:
            for callback in self.on_forget:
                callback(member.replica)

    # -- the admin operations: validate against live state, then change -----------------

    async def add(self, request: MembershipRequest) -> list[str]:
        """Adds replicas per `/add`; returns the serving names. Raises ContractError."""
        async with self.lock:
            for name in request.hostnames:
                if name in self._members:
                    raise ContractError(contract.hostname_exists(name))
            if len(self._members) + request.n > self.max_replicas:
                raise ContractError(contract.cannot_exceed(self.max_replicas))
            names = list(request.hostnames)
            while len(names) < request.n:
                name = self.generate_name()
                if name not in names:
                    names.append(name)
            if names:
                try:
                    await self.spawn(names)
                except SpawnError as exc:
                    raise ContractError(str(exc), status=500) from None
            self.target += request.n
            return self.snapshot.names()

    async def remove(self, request: MembershipRequest) -> list[str]:
        """Removes replicas per `/rm`; returns the serving names. Raises ContractError."""
        async with self.lock:
            removable = [name for name, m in self._members.items() if m.state in REMOVABLE]
            if request.n > len(removable):
                raise ContractError(contract.cannot_remove(request.n, len(removable)))
            for name in request.hostnames:
                if name not in removable:
                    raise ContractError(contract.not_a_replica(name))
            rest = [n for n in removable if n not in request.hostnames]
            chosen = list(request.hostnames)
            chosen += self._rng.sample(rest, request.n - len(chosen))
            await self.retire(chosen)
            self.target = max(0, self.target - request.n)
            return self.snapshot.names()

    async def shutdown(self) -> None:
        """Forgets every member; the runtime decides whether replicas outlive the balancer."""
        self._members.clear()
        self._publish()
        self.tables.close()
