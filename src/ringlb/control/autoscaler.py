"""Autoscaler: keeps the replica count between a minimum and a maximum from the load.

The load is the mean number of in-flight requests per serving replica over the last
`window` seconds (sampled every `tick`). Above `target x (1 + tolerance)` it adds the
replicas that bring the mean back to the target; below `target x (1 - tolerance)` it
removes the least loaded replica, which drains first (ReplicaSet.retire). The tolerance band
and the two cooldowns keep it from flapping: at most one change per cooldown. It changes
membership only through the ReplicaSet, like /add and /rm do.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass

from ringlb.clock import Clock, SystemClock
from ringlb.contract import ContractError, MembershipRequest
from ringlb.control.membership import MemberState, ReplicaSet

log = logging.getLogger("ringlb.autoscaler")


TICK = 0.25  # seconds between two samples of the load


@dataclass(frozen=True, slots=True)
class ScalingRules:
    min_replicas: int
    max_replicas: int
    target_inflight: float  # in-flight requests per replica it aims at
    tolerance: float  # no change while the load is within target x (1 +- tolerance)
    up_cooldown: float  # seconds after any change before scaling up again
    down_cooldown: float  # seconds after any change before scaling down
    window: float  # seconds of samples the load is averaged over


def decide(rules: ScalingRules, load: float, serving: int, since_change: float) -> int:
    """Returns how many replicas to add (> 0) or remove (< 0) for a mean `load` per replica
    over `serving` replicas, `since_change` seconds after the last change. Pure."""
    if serving < rules.min_replicas:
        return rules.min_replicas - serving
    high = rules.target_inflight * (1 + rules.tolerance)
    low = rules.target_inflight * (1 - rules.tolerance)
    if load > high and serving < rules.max_replicas and since_change >= rules.up_cooldown:
        wanted = math.ceil(serving * load / rules.target_inflight)
        return min(wanted, rules.max_replicas) - serving
    if load < low and serving > rules.min_replicas and since_change >= rules.down_cooldown:
        # One at a time, and only if the others can take its share without going above the
        # band (which would scale straight back up: flapping).
        after = load * serving / (serving - 1) if serving > 1 else 0.0
        if after <= high:
            return -1
    return 0


class Autoscaler:
    def __init__(
        self, replicaset: ReplicaSet, rules: ScalingRules, clock: Clock | None = None
    ) -> None:
        self._replicaset = replicaset
        self.rules = rules
        self._clock = clock = clock or SystemClock()
        self._samples: deque[float] = deque(maxlen=max(1, round(rules.window / TICK)))
        self._last_change = clock.now()
        self.decisions = {"up": 0, "down": 0}  # read by ringlb.admin.metrics

    def sample(self) -> float:
        """Records the current in-flight requests per serving replica; returns the mean
        over the window."""
        serving = self._replicaset.snapshot.replicas
        now = sum(r.inflight for r in serving) / len(serving) if serving else 0.0
        self._samples.append(now)
        return sum(self._samples) / len(self._samples)

    async def run(self) -> None:
        while True:
            await self._clock.sleep(TICK)
            load = self.sample()
            if len(self._samples) < self._samples.maxlen:  # type: ignore[operator]
                continue  # not a full window yet
            serving = len(self._replicaset.snapshot.replicas)
            delta = decide(self.rules, load, serving, self._clock.now() - self._last_change)
            if delta:
                await self._apply(delta, load, serving)

    async def _apply(self, delta: int, load: float, serving: int) -> None:
        rs = self._replicaset
        direction = "up" if delta > 0 else "down"
        try:
            if delta > 0:
                names = await rs.add(MembershipRequest(n=delta, hostnames=()))
                changed = names[-delta:]
            else:
                victim = min(
                    (r for r, _ in rs.members_in(MemberState.SERVING)), key=lambda r: r.inflight
                )
                names = await rs.remove(MembershipRequest(n=1, hostnames=(victim.name,)))
                changed = [victim.name]
        except ContractError as exc:
            log.warning("scale %s by %d refused: %s", direction, abs(delta), exc.text)
            self._last_change = self._clock.now()
            return
        self._last_change = self._clock.now()
        self._samples.clear()  # the old samples describe the old replica set
        self.decisions[direction] += 1
        detail = f"{serving} -> {len(names)} replicas at {load:.1f} in flight per replica"
        log.info("scaled %s: %s", direction, detail)
        rs.record_event(f"scaled {direction}", ",".join(changed), detail)
