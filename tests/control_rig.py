"""An in-process control plane for tests: a ReplicaSet on the shipped fake runtime, with a
manual clock and a probe the test controls."""

from __future__ import annotations

import random

from ringlb.clock import ManualClock
from ringlb.contract import MembershipRequest
from ringlb.control.membership import MemberState, ReplicaSet
from ringlb.control.outliers import OutlierRules
from ringlb.model import Replica
from ringlb.policies import make_policy
from ringlb.runtimes.fake import FakeRuntime


class Rig:
    """A ReplicaSet on a fake runtime; `down` names the replicas whose heartbeat fails."""

    def __init__(self, outliers: OutlierRules | None = None, start_timeout: float = 5.0) -> None:
        self.clock = ManualClock()
        self.runtime = FakeRuntime()
        self.down: set[str] = set()
        self.rs = ReplicaSet(
            self.runtime,
            make_policy("round_robin"),
            self.probe,
            max_replicas=10,
            start_timeout=start_timeout,
            drain_timeout=1.0,
            outliers=outliers or OutlierRules(3, 10.0, 2),
            rng=random.Random(7),
            clock=self.clock,
        )

    async def probe(self, replica: Replica) -> bool:
        return replica.name not in self.down

    async def add(self, *names: str) -> list[str]:
        return await self.rs.add(MembershipRequest(n=len(names), hostnames=names))

    def replica(self, name: str) -> Replica:
        return next(r for r, _ in self.rs.members() if r.name == name)

    def state(self, name: str) -> MemberState:
        return next(s for r, s in self.rs.members() if r.name == name)
