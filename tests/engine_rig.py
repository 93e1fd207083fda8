"""An in-process data plane for tests: the real engine, connections and pools, on the
shipped in-memory transports, with a fake Routing that records what it is told."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Container

from ringlb.dataplane.connection import ClientConnection, ClientLimits
from ringlb.dataplane.deadlines import DeadlineSweep
from ringlb.dataplane.forward import Forwarder
from ringlb.dataplane.keys import RandomKeys, make_key_source
from ringlb.dataplane.listener import Listener
from ringlb.dataplane.pool import UpstreamPools
from ringlb.dataplane.routing import LocalAnswer
from ringlb.dataplane.testing import MemoryTransport, pooled_connections
from ringlb.model import Replica, Snapshot


async def turns(n: int = 5) -> None:
    """Lets the event loop run `n` turns (callbacks scheduled by the last ones included)."""
    for _ in range(n):
        await asyncio.sleep(0)


class FirstPicker:
    def __init__(self, replicas: tuple[Replica, ...]) -> None:
        self.replicas = replicas

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        return next((r for r in self.replicas if r not in exclude), None)


class FakeRouting:
    def __init__(self, replicas: tuple[Replica, ...]) -> None:
        self.snapshot = Snapshot(1, replicas, FirstPicker(replicas))
        self.ejected: list[str] = []
        self.errors: list[str] = []

    def eject(self, replica: Replica) -> None:
        self.ejected.append(replica.name)

    def report_error(self, replica: Replica) -> None:
        self.errors.append(replica.name)


class NoEndpoints:
    paths: frozenset[str] = frozenset()

    async def handle(self, method, path, body, authorization) -> LocalAnswer:
        raise AssertionError("no local endpoint here")


LIMITS = ClientLimits(
    header_timeout=10.0,
    body_timeout=30.0,
    idle_timeout=60.0,
    send_timeout=30.0,
    send_buffer=0,  # the kernel's autotuning (tests/unit/test_acceptor.py sets one)
    max_header_bytes=65536,
    max_headers=100,
    max_body=1 << 30,
    tunnel_idle_timeout=300.0,
)
UPSTREAM_TIMEOUT = 5.0


class EngineRig:
    def __init__(self, replicas: int = 2, pool_size: int = 4) -> None:
        self.replicas = tuple(
            Replica(f"server_{i}", i, "127.0.0.1", 1) for i in range(1, replicas + 1)
        )
        self.routing = FakeRouting(self.replicas)
        self.pools = UpstreamPools(pool_size, 1.0, 16, 1.0)
        self.forwarder = Forwarder(
            self.routing,
            self.pools,
            key_source=make_key_source("x-request-id"),
            random_key=RandomKeys(random.Random(1)),
            max_attempts=3,
            max_inflight=100,
            retry_5xx=False,
            access_log=None,
        )
        clients: set[ClientConnection] = set()
        self.sweep = DeadlineSweep(clients, self.pools.busy, UPSTREAM_TIMEOUT, 0.25)
        self.listener = Listener(self.forwarder, NoEndpoints(), LIMITS, self.sweep, clients, 100)

    def client(self, transport: type[MemoryTransport] = MemoryTransport) -> MemoryTransport:
        return transport().attach(self.listener.protocol())

    def upstreams(self, replica: int = 0, count: int = 1) -> list[MemoryTransport]:
        """Idle pooled connections to the replica at index `replica`."""
        return pooled_connections(self.pools, self.replicas[replica], count)

    def idle(self, replica: int = 0) -> int:
        return len(self.pools.by_replica[self.replicas[replica]]._idle)
