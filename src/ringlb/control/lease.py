"""The leader lease: which one of several balancers sharing one membership is the leader.

The lease is one record in the engine (`LeaseStore`) that only a compare-and-swap can
change: a write carrying a stale version fails. The leader rewrites it every
`renew_interval`; a follower that sees the record's version unchanged for `lease_time` on
its own monotonic clock takes it over by one CAS write (two followers racing: one write
wins, the other sees a stale version). No wall clocks are compared across machines
(the Kubernetes leader election's "observed time").

Safety: a leader counts its lease from the moment it *started* its last successful write,
and steps down when `lease_time` has passed since then without another one; a follower
counts from when it *saw* that write, which is later. So the old leader has stepped down
before anyone may take over (as long as clocks run at about the same rate).

The record also carries what the leader publishes for the followers: the replica target
and the policy (what `/add`, `/rm` and `PUT /policy` changed), so that a new leader keeps
N at its target and every balancer uses the same policy.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from ringlb.clock import Clock
from ringlb.runtimes import RuntimeFailure

log = logging.getLogger("ringlb.lease")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The lease as stored: who holds it, where its admin API is, how often it renewed,
    and the cluster state it publishes (target None: no leader has set one yet)."""

    holder: str
    address: str
    renewals: int = 0
    target: int | None = None
    policy: str = ""  # JSON of describe_policy, "" when none was published

    def fields(self) -> dict[str, str]:
        """Returns the record as the store keeps it: string fields (labels, on Swarm)."""
        target = "" if self.target is None else str(self.target)
        return {
            "holder": self.holder,
            "address": self.address,
            "renewals": str(self.renewals),
            "target": target,
            "policy": self.policy,
        }

    @classmethod
    def parse(cls, fields: dict[str, str]) -> LeaseRecord | None:
        """Returns the record in `fields`, or None when they hold none (or a broken one:
        then it is free to take)."""
        try:
            target = fields.get("target", "")
            return cls(
                holder=fields["holder"],
                address=fields.get("address", ""),
                renewals=int(fields.get("renewals", "0")),
                target=int(target) if target else None,
                policy=fields.get("policy", ""),
            )
        except (KeyError, ValueError):
            return None


class LeaseStore(Protocol):
    """A compare-and-swap register of string fields, in the engine."""

    async def read(self) -> tuple[dict[str, str], int]:
        """Returns the fields ({} when none were written yet) and their version."""
        ...

    async def write(self, fields: dict[str, str], version: int) -> bool:
        """Writes `fields` if the stored version is still `version`; returns False when it
        is not (someone else wrote first). Raises RuntimeFailure on engine trouble."""
        ...


class Role(enum.Enum):
    LEADER = "leader"
    FOLLOWER = "follower"


# What the leader publishes in each renewal: (target, policy JSON).
Published = Callable[[], tuple[int, str]]


class Lease:
    """Holds or watches the lease; `role`, `leader` and `leader_address` say the outcome,
    `changed` is set at every change of role."""

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        address: str,
        lease_time: float,
        renew_interval: float,
        clock: Clock,
        published: Published,
    ) -> None:
        self._store = store
        self.name = name
        self.address = address
        self.lease_time = lease_time
        self.renew_interval = renew_interval
        self._clock = clock
        self._published = published
        self.role = Role.FOLLOWER
        self.record: LeaseRecord | None = None  # the last one read or written
        self.changed = asyncio.Event()
        self.takeovers = 0
        self._seen_version: int | None = None
        self._seen_at = clock.now()
        self._renewed_at = 0.0  # when the last successful write started (leader)

    @property
    def leader(self) -> str | None:
        return self.record.holder if self.record else None

    @property
    def leader_address(self) -> str | None:
        return self.record.address if self.record else None

    async def run(self) -> None:
        while True:
            await self.step()
            await self._clock.sleep(self.renew_interval)

    async def step(self) -> None:
        """Reads the lease once, then renews it (leader) or takes it if expired (follower)."""
        now = self._clock.now()
        try:
            fields, version = await self._bounded(self._store.read())
        except RuntimeFailure as exc:
            self._expire_own(f"cannot read the lease ({exc})")
            return
        record = LeaseRecord.parse(fields)
        if version != self._seen_version:
            self._seen_version, self._seen_at = version, now
        if self.role is Role.LEADER:
            if record is None or record.holder != self.name:
                self.record = record
                self._become(Role.FOLLOWER, f"{record.holder if record else 'nobody'} holds it")
                return
            target, policy = self._published()
            renewed = replace(record, renewals=record.renewals + 1, target=target, policy=policy)
            await self._write(renewed, version, now)
            return
        self.record = record
        mine = record is not None and record.holder == self.name  # from an earlier life
        if record is None or mine or now - self._seen_at >= self.lease_time:
            carried = record or LeaseRecord(self.name, self.address)
            taken = replace(carried, holder=self.name, address=self.address, renewals=0)
            await self._write(taken, version, now)

    async def _write(self, record: LeaseRecord, version: int, started: float) -> None:
        try:
            written = await self._bounded(self._store.write(record.fields(), version))
        except RuntimeFailure as exc:
            self._expire_own(f"cannot write the lease ({exc})")
            return
        if not written:  # someone else wrote first: they hold it
            if self.role is Role.LEADER:
                self._become(Role.FOLLOWER, "the lease changed under it")
            return
        self.record = record
        self._renewed_at = started
        if self.role is Role.FOLLOWER:
            self.takeovers += 1
            self._become(Role.LEADER, f"took the lease (version {version})")

    async def _bounded(self, call: Awaitable[T]) -> T:
        """Runs one store call within a renew interval: a hung engine must not keep a
        leader past its lease."""
        try:
            return await asyncio.wait_for(call, self.renew_interval)
        except TimeoutError:
            raise RuntimeFailure(f"no answer within {self.renew_interval:g} s") from None

    def _expire_own(self, reason: str) -> None:
        """A leader that cannot renew steps down once its lease has run out."""
        log.warning("%s", reason)
        if self.role is Role.LEADER and self._clock.now() - self._renewed_at >= self.lease_time:
            self._become(Role.FOLLOWER, "its lease ran out unrenewed")

    def _become(self, role: Role, why: str) -> None:
        self.role = role
        log.warning("balancer %s is now %s: %s", self.name, role.value, why)
        self.changed.set()
