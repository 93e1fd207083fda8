"""The runtime interface: where replicas run (local processes, Docker containers, ...).

A runtime starts and stops replicas by name and says which ones it owns; it knows nothing
of rings, health or the contract. Replicas it reports via `deaths()` are ones that stopped
without being asked to.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


class RuntimeFailure(Exception):
    """A runtime could not do what was asked; the message is fit for an `<Error>` answer."""


@dataclass(frozen=True, slots=True)
class RunningReplica:
    """A replica as a runtime sees it: its name, ring id and address."""

    name: str
    rid: int
    host: str
    port: int


class Runtime(ABC):
    name: str

    @abstractmethod
    async def start(self, name: str, rid: int) -> RunningReplica:
        """Starts a replica called `name` and returns where it listens.

        Returns once the replica is launched, not once it answers; raises RuntimeFailure.
        """

    @abstractmethod
    async def stop(self, name: str, force: bool = False) -> None:
        """Stops and deletes the replica `name`; does nothing if it is already gone.

        `force` skips the graceful stop: the replica is dead or hung, so waiting for it to
        exit cleanly would only delay its replacement.
        """

    async def adopt(self) -> list[RunningReplica]:
        """Returns the live replicas this runtime already owns (after a balancer restart)."""
        return []

    async def listing(self) -> list[RunningReplica]:
        """Returns the replicas that run now, whoever started them, changing nothing (a
        follower's view of a membership another balancer leads)."""
        return []

    def lease_store(self) -> Any | None:
        """Returns the engine's compare-and-swap register for the leader lease
        (`ringlb.control.lease.LeaseStore`) when several balancers may share this
        runtime's replicas; None when a balancer is alone with them."""
        return None

    async def own_address(self) -> str | None:
        """Returns the address the other balancers sharing the replicas reach this one at
        (its address on the replicas' network), or None when the runtime cannot tell."""
        return None

    async def deaths(self) -> AsyncIterator[str]:
        """Yields names of replicas that died on their own; runs until cancelled."""
        await asyncio.Event().wait()
        yield ""  # pragma: no cover - unreachable, makes this an async generator

    async def close(self) -> None:
        """Releases the runtime; replicas that cannot outlive the balancer are stopped."""
        return None
