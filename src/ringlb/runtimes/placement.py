"""Where new replica services may go: the configured constraints, minus nodes that seem
gone.

A node whose engine stopped or that is cut off still looks `ready` to the managers for
several seconds (until its heartbeats are overdue), and the scheduler, which favours the
node with the fewest tasks, would put the replacements of its dead replicas right back on
it, where they never start. So a node on which a replica died without its task being
reported as ended (its agent said nothing: it is unreachable) is avoided for a while, as
long as another ready node is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

AVOID_SECONDS = 60.0  # longer than Swarm takes to mark an unreachable node down


class Placement:
    def __init__(
        self,
        constraints: Iterable[str],
        avoid_seconds: float = AVOID_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._constraints = list(constraints)
        self._avoid_seconds = avoid_seconds
        self._clock = clock
        self._avoided: dict[str, float] = {}  # node id -> until when

    def avoid(self, node_id: str) -> None:
        """Keeps new replicas off `node_id` for a while (a replica died there unseen)."""
        self._avoided[node_id] = self._clock() + self._avoid_seconds

    def constraints(self, ready_nodes: Iterable[str]) -> list[str]:
        """Returns the constraints of a new service, given the ids of the nodes that are
        ready: the configured ones, and `node.id!=X` for every avoided node, unless that
        would leave no ready node at all."""
        now = self._clock()
        self._avoided = {n: until for n, until in self._avoided.items() if until > now}
        ready = set(ready_nodes)
        avoided = ready & set(self._avoided)
        if not ready - avoided:
            return list(self._constraints)
        return [*self._constraints, *(f"node.id!={node}" for node in sorted(avoided))]
