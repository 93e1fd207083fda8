"""The data plane: routes each client request to a replica and relays the answer.

Per request it reads the routing snapshot once, picks a replica, and forwards over a
pooled keep-alive connection. It never blocks, sleeps, locks or calls a runtime; its only
write to the control plane is `ReplicaSet.eject` for a replica that failed hard.

Two paths share one set of rules: `try_fast` handles the common case (an idle pooled
connection, a body already in hand) with callbacks only; everything else (connecting,
waiting for the pool, retrying elsewhere, streaming a body) runs as a coroutine in
`forward`. A failure is retried on another replica only while nothing of the answer has
reached the client and nothing of a streamed body has gone to the failed replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ringlb import contract, http11
from ringlb.admin import AdminAPI
from ringlb.body_stream import BodyAborted
from ringlb.connection import ClientConnection, ClientLimits, ProxiedRequest
from ringlb.keys import DEFAULT_KEY_SOURCE, KeySource, RandomKeys, make_key_source
from ringlb.relay import ResponseRelay
from ringlb.replica import Replica
from ringlb.replicaset import ReplicaSet
from ringlb.upstream import UpstreamConnection, UpstreamFailure, UpstreamPool

log = logging.getLogger("ringlb.proxy")

DEADLINE_TICK = 0.25  # resolution of client deadlines (s)

__all__ = ["ClientLimits", "Proxy"]


class Proxy:
    """Everything a client connection needs: the snapshot source, pools and settings."""

    def __init__(
        self,
        replicaset: ReplicaSet,
        admin: AdminAPI,
        *,
        pool_size: int,
        connect_timeout: float,
        timeout: float,
        max_attempts: int,
        max_body: int,
        random_key: Callable[[], int] | None = None,
        key_source: KeySource | None = None,
        limits: ClientLimits | None = None,
    ) -> None:
        self.replicaset = replicaset
        self.admin = admin
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.max_body = max_body
        self.random_key = random_key or RandomKeys()
        self.key_source = key_source or make_key_source(DEFAULT_KEY_SOURCE)
        self.limits = limits or ClientLimits()
        self.pools: dict[Replica, UpstreamPool] = {}
        self.clients: set[ClientConnection] = set()
        self.now = 0.0  # coarse clock for client deadlines, advanced by `run_deadlines`

    def protocol(self) -> ClientConnection:
        return ClientConnection(self, asyncio.get_running_loop())

    def forget(self, replica: Replica) -> None:
        """Closes the pool of a replica that left the set for good."""
        pool = self.pools.pop(replica, None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
        for client in list(self.clients):
            client.close()

    async def run_deadlines(self) -> None:
        """Expires client deadlines every DEADLINE_TICK: one sweep instead of a timer per
        request (header, body and idle timeouts)."""
        loop = asyncio.get_running_loop()
        while True:
            self.now = now = loop.time()
            for client in [c for c in self.clients if 0.0 < c.deadline <= now]:
                client.expired()
            await asyncio.sleep(DEADLINE_TICK)

    def _pool(self, replica: Replica) -> UpstreamPool:
        pool = self.pools.get(replica)
        if pool is None:
            pool = UpstreamPool(replica, self.pool_size, self.connect_timeout)
            self.pools[replica] = pool
        return pool

    def _relay(self, request: ProxiedRequest, client: ClientConnection) -> ResponseRelay:
        return ResponseRelay(
            client.write,
            request.path,
            head=request.method == "HEAD",
            keep_alive=request.keep_alive,
            client_version=request.version,
        )

    # -- the fast path: callbacks only ------------------------------------------------------

    def choose(self, request: ProxiedRequest) -> Replica | None:
        """Returns the policy's first choice for `request` (one pick per request: stateful
        policies such as round robin advance on every pick)."""
        if request.key is None:
            request.key = self.random_key()
        return self.replicaset.snapshot.picker.pick(request.key, ())

    def try_fast(
        self, request: ProxiedRequest, upstream: bytes, client: ClientConnection, replica: Replica
    ) -> bool:
        """Starts the exchange with `replica` at once if it has an idle pooled connection;
        returns False (nothing done) otherwise. Calls `client.done` at the end."""
        pool = self.pools.get(replica)
        conn = pool.take_idle() if pool is not None else None
        if conn is None:
            return False
        assert pool is not None
        relay = self._relay(request, client)
        replica.inflight += 1
        client.upstream = conn

        def on_done(keep_alive: bool, failure: UpstreamFailure | None) -> None:
            replica.inflight -= 1
            client.upstream = None
            if failure is None:
                pool.release(conn, keep_alive)
                client.done(relay.keep_alive)
                return
            conn.close()
            if relay.started:
                log.warning("answer from %s cut short: %s", replica.name, failure)
                client.done(False)
                return
            # Not a byte reached the client: continue as the slow path would, on a fresh
            # connection to the same replica (a stale keep-alive) or on the next replica.
            error = f"replica '{replica.name}': {failure}"
            if failure.stale:
                answer = self.forward(request, upstream, client, first=replica)
            else:
                self.replicaset.eject(replica)
                answer = self.forward(request, upstream, client, [replica], error)
            client.worker = client.loop.create_task(client.run_answer(answer))

        conn.start(upstream, relay, request.method == "HEAD", self.timeout, on_done)
        return True

    # -- the general path ---------------------------------------------------------------------

    async def forward(
        self,
        request: ProxiedRequest,
        upstream: bytes,
        client: ClientConnection,
        tried: list[Replica] | None = None,
        error: str = "",
        first: Replica | None = None,
    ) -> bool:
        """Relays the replica's answer (or a JSON error) to `client`.

        Returns whether the client connection can carry another request: False when the
        answer had to be cut short or part of the request body was left unread. `first`
        is the replica already chosen for this request, if any; `tried` and `error` carry
        on from a failed fast-path attempt.
        """
        if request.key is None:
            request.key = self.random_key()
        tried = tried if tried is not None else []
        head = request.method == "HEAD"
        stream = request.stream
        for _ in range(self.max_attempts - len(tried)):
            if first is not None:
                replica, first = first, None
            else:
                replica = self.replicaset.snapshot.picker.pick(request.key, tried)
            if replica is None:
                break
            tried.append(replica)
            relay = self._relay(request, client)
            replica.inflight += 1
            try:
                await self._exchange(replica, request, upstream, relay, client)
            except UpstreamFailure as exc:
                error = f"replica '{replica.name}': {exc}"
                self.replicaset.eject(replica)
                if relay.started:
                    log.warning("answer from %s cut short: %s", replica.name, exc)
                    return False
                if stream is not None and stream.consumed:
                    break  # part of the body is gone with that replica: it cannot be replayed
                log.warning("request to %s failed: %s; retrying elsewhere", replica.name, exc)
                continue
            except BodyAborted:
                return False  # the client left inside its own request body
            finally:
                replica.inflight -= 1
            # Unread body left on the client connection: it cannot carry another request.
            return relay.keep_alive and (stream is None or stream.complete)
        status, text = (
            (502, contract.upstream_failed(error)) if tried else (503, contract.NO_REPLICAS)
        )
        keep_alive = request.keep_alive and (stream is None or stream.complete)
        client.write(
            http11.json_response(status, contract.failure(text), keep_alive=keep_alive, head=head)
        )
        return keep_alive

    async def _exchange(
        self,
        replica: Replica,
        request: ProxiedRequest,
        upstream: bytes,
        relay: ResponseRelay,
        client: ClientConnection,
    ) -> None:
        pool = self._pool(replica)
        body, head = request.stream, request.method == "HEAD"
        for fresh in (False, True):
            conn: UpstreamConnection = await pool.acquire(fresh=fresh)
            client.upstream = conn
            try:
                keep_alive = await conn.exchange(upstream, relay, head, self.timeout, body)
            except UpstreamFailure as exc:
                conn.close()
                if fresh or not exc.stale or relay.started or (body is not None and body.consumed):
                    raise
                continue  # a reused connection the replica had closed: once more, on a new one
            except BaseException:
                # Cancelled (the client left) or the client's body broke off: the connection
                # is mid-exchange, so it can never be reused.
                conn.close()
                raise
            finally:
                client.upstream = None
            pool.release(conn, keep_alive)
            return
