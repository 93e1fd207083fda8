"""What the data plane needs from the rest of the balancer, and nothing more.

`Routing` is the control plane as the data plane sees it: one reference to the current
immutable snapshot, and two reports (a replica failed hard; a replica answered 5xx). The
control plane's `ReplicaSet` implements it; the data plane never imports the control plane.

`LocalEndpoints` are the paths the balancer answers itself (the admin API): the data plane
parses their requests and writes their answers, the endpoints decide what they say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ringlb.contract import JSON_CONTENT_TYPE
from ringlb.model import Replica, Snapshot


class Routing(Protocol):
    @property
    def snapshot(self) -> Snapshot:
        """The current routing snapshot (replaced, never changed, on each membership change)."""
        ...

    def eject(self, replica: Replica) -> None:
        """Reports that `replica` failed an exchange hard (refused, reset, timed out)."""
        ...

    def report_error(self, replica: Replica) -> None:
        """Reports that `replica` answered 5xx; a non-5xx answer clears
        `replica.errors_in_row` instead (the data plane does that, without a call)."""
        ...


@dataclass(frozen=True, slots=True)
class LocalAnswer:
    """An answer the balancer gives itself."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes = JSON_CONTENT_TYPE.encode()


class LocalEndpoints(Protocol):
    @property
    def paths(self) -> frozenset[str]:
        """The exact paths answered here instead of being proxied."""
        ...

    async def handle(
        self, method: str, path: str, body: bytes, authorization: bytes | None
    ) -> LocalAnswer:
        """Returns the answer to `method path` with `body`; never raises."""
        ...
