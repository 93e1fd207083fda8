"""This balancer's part among several that share one membership (the swarm runtime).

The lease (`ringlb.control.lease`) makes one balancer the leader: it alone starts, replaces
and removes replicas (the supervisor, the autoscaler, `/add`, `/rm`) and sets the policy.
Every other one is a follower: it mirrors the membership the leader keeps in the engine
(`Runtime.listing`, every `sync_interval`; a replica new to it serves once it answers a
heartbeat from here too), takes the policy and the target the leader publishes in the
lease, and relays writes to the leader. Every balancer routes, and ejects failed replicas
from its own table.

A follower that becomes the leader takes the membership over (`take_over`, from the app);
a leader that loses its lease stops the balancer (`LeadershipLost`, exit status 1) and its
orchestrator restarts it as a follower: stepping down in place would mean undoing
half-finished starts, and a restart is a mechanism that is there and tested already.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ringlb import contract
from ringlb.clock import Clock
from ringlb.control.lease import Lease, LeaseStore, Role
from ringlb.control.membership import (
    MemberState,
    Probe,
    ReplicaSet,
    replica_of,
    same_replica,
)
from ringlb.dataplane.routing import LocalAnswer
from ringlb.policies import PolicyError, describe_policy, make_policy
from ringlb.runtimes import Runtime, RuntimeFailure

if TYPE_CHECKING:
    import aiohttp  # imported where writes are relayed: a balancer alone never needs it

log = logging.getLogger("ringlb.cluster")

RELAY_SLACK = 10.0  # seconds a relayed write may take beyond the leader's own time limits


class LeadershipLost(Exception):
    """This balancer led and no longer does: it stops, to come back as a follower."""


class Cluster:
    def __init__(
        self,
        store: LeaseStore,
        replicaset: ReplicaSet,
        runtime: Runtime,
        probe: Probe,
        *,
        name: str,
        lease_time: float,
        renew_interval: float,
        sync_interval: float,
        write_timeout: float,
        clock: Clock,
    ) -> None:
        self.lease = Lease(
            store, name, "", lease_time, renew_interval, clock, published=self.published
        )
        self._replicaset = replicaset
        self._runtime = runtime
        self._probe = probe
        self._sync_interval = sync_interval
        self._write_timeout = write_timeout + RELAY_SLACK
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.relayed = 0  # writes handed to the leader
        self._published_policy = ""  # the last policy taken from the lease record

    @property
    def leading(self) -> bool:
        return self.lease.role is Role.LEADER

    def published(self) -> tuple[int, str]:
        """What the leader publishes in its lease: the target and the policy."""
        rs = self._replicaset
        return rs.target, json.dumps(describe_policy(rs.policy), sort_keys=True)

    async def join(self, address: str) -> None:
        """Reads the lease once, as the balancer whose admin API is at `address`: this one
        leads (no one did, or the lease was its own) or follows, and then mirrors what the
        leader runs."""
        self.lease.address = address
        await self.lease.step()
        if not self.leading:
            await self.sync()

    async def run(self, take_over: Callable[[], Awaitable[None]]) -> None:
        """Follows until the lease makes this balancer the leader, then calls `take_over`;
        leads until it loses the lease, and then raises LeadershipLost."""
        changed = self.lease.changed
        followed = not self.leading
        while not self.leading:
            changed.clear()
            await self._sync_quietly()
            await self._clock.wait(changed, self._sync_interval)
        if followed:
            self._forget_reported_deaths()  # a follower's view; the leader looks again
            await take_over()
        while self.leading:
            changed.clear()
            if self.leading:
                await changed.wait()
        raise LeadershipLost(f"balancer {self.lease.name} lost the lease")

    async def _sync_quietly(self) -> None:
        try:
            await self.sync()
        except RuntimeFailure as exc:
            log.warning("cannot mirror the membership now (%s)", exc)

    async def sync(self) -> None:
        """Mirrors the leader's membership, policy and target once (follower)."""
        rs = self._replicaset
        running = await self._runtime.listing()
        self._forget_reported_deaths()
        known = {r.name: r for r, state in rs.members() if state is not MemberState.DOWN}
        fresh = [item for item in running if not same_replica(known.get(item.name), item)]
        answers = await asyncio.gather(*(self._probe(replica_of(item)) for item in fresh))
        refused = {item.name for item, ok in zip(fresh, answers, strict=True) if not ok}
        if self.leading:
            return  # took over meanwhile: the leader's own view rules
        rs.follow([item for item in running if item.name not in refused])
        record = self.lease.record
        if record is not None and record.target is not None:
            rs.target = record.target
        # Only a policy the leader published anew: the record lags a relayed PUT /policy by
        # up to a renewal, and taking its older policy again would flap between the two.
        if record is not None and record.policy and record.policy != self._published_policy:
            self._published_policy = record.policy
            self._apply_policy(json.loads(record.policy))

    def _forget_reported_deaths(self) -> None:
        """Empties the queue of deaths the heartbeats reported: a follower replaces no one
        (the dead are out of its table already; `sync` admits them again if they answer)."""
        while not self._replicaset.dead.empty():
            self._replicaset.dead.get_nowait()

    def _apply_policy(self, described: dict[str, Any]) -> None:
        rs = self._replicaset
        if described == json.loads(json.dumps(describe_policy(rs.policy))):
            return
        try:
            policy = make_policy(described["name"], **described.get("options", {}))
        except (PolicyError, KeyError, TypeError) as exc:
            log.error("cannot use the leader's policy %s: %s", described, exc)
            return
        rs.set_policy(policy)
        log.info("policy switched to %s by the leader", describe_policy(policy))

    # -- writes made on a follower -------------------------------------------------------

    async def relay(
        self, method: str, path: str, body: bytes, authorization: bytes | None
    ) -> LocalAnswer | None:
        """Returns the leader's answer to a write made here, once this balancer shows its
        effect too; None when this balancer leads (it answers itself). While no leader
        answers (one died and the lease is not taken over yet) it waits up to the lease
        time plus a renewal, then answers 503."""
        lease = self.lease
        deadline = self._clock.now() + lease.lease_time + lease.renew_interval
        while not self.leading:
            address = lease.leader_address
            if address and lease.leader != lease.name:
                import aiohttp

                try:
                    answer = await self._send(address, method, path, body, authorization)
                except aiohttp.ClientConnectorError as exc:  # not sent: safe to send again
                    log.warning("leader %s at %s refused a write (%s)", lease.leader, address, exc)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # Sent, maybe done: sending it again could do it twice.
                    log.error("leader %s at %s failed a write: %r", lease.leader, address, exc)
                    return LocalAnswer(502, contract.failure(contract.leader_failed(lease.leader)))
                else:
                    self.relayed += 1
                    await self._show(path, answer)
                    return answer
            if self._clock.now() >= deadline:
                return LocalAnswer(503, contract.failure(contract.NO_LEADER))
            await self._clock.sleep(lease.renew_interval / 4)
        return None

    async def _send(
        self, address: str, method: str, path: str, body: bytes, authorization: bytes | None
    ) -> LocalAnswer:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._write_timeout)
            )
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization.decode("latin-1")
        url = f"http://{address}{path}"
        async with self._session.request(method, url, data=body, headers=headers) as reply:
            return LocalAnswer(reply.status, await reply.read())

    async def _show(self, path: str, answer: LocalAnswer) -> None:
        """Makes a write the leader answered visible here before answering it: the new
        membership mirrored, the new policy in use."""
        if answer.status != 200:
            return
        rs = self._replicaset
        if path == "/policy":
            self._apply_policy(json.loads(answer.body)["message"])
        else:
            await self._sync_quietly()
        await rs.settled()

    def describe(self) -> dict[str, Any]:
        """This balancer's part, for /status and /metrics."""
        lease = self.lease
        return {
            "name": lease.name,
            "role": lease.role.value,
            "leader": lease.leader,
            "leader_address": lease.leader_address,
            "takeovers": lease.takeovers,
            "relayed_writes": self.relayed,
        }

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
