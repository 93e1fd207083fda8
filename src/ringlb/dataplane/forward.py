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
from dataclasses import dataclass

from ringlb import contract
from ringlb.admin.api import AdminAPI
from ringlb.control.membership import ReplicaSet, Snapshot
from ringlb.dataplane import http11
from ringlb.dataplane.access_log import AccessLog
from ringlb.dataplane.body_stream import BodyAborted
from ringlb.dataplane.connection import BOTH, ClientConnection, ClientLimits, ProxiedRequest
from ringlb.dataplane.keys import DEFAULT_KEY_SOURCE, KeySource, RandomKeys, make_key_source
from ringlb.dataplane.relay import ResponseRelay
from ringlb.dataplane.upstream import (
    Overloaded,
    UpstreamConnection,
    UpstreamFailure,
    UpstreamPool,
    expire_exchanges,
)
from ringlb.model import Replica

log = logging.getLogger("ringlb.dataplane.forward")

DEADLINE_TICK = 0.25  # resolution of client deadlines and of the upstream timeout (s)

# RFC 9110 9.2.2: repeating these has the effect of sending them once. Any other request
# that reached a replica is never sent to a second one.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

__all__ = ["Capacity", "ClientLimits", "Proxy"]

# What a failed attempt leads to (Proxy._after_failure).
CUT_SHORT, GIVE_UP, RETRY = "cut short", "give up", "retry"


@dataclass(frozen=True, slots=True)
class Capacity:
    """How much the balancer takes on at once; beyond it clients get 503 + Retry-After
    rather than piling up in memory. The per-replica cap is `pool_size` (connections)."""

    max_inflight: int = 16384  # proxied requests being answered, all replicas together
    max_connections: int = 16384  # client connections
    queue_size: int = 16384  # requests waiting for one replica's connection
    queue_timeout: float = 30.0  # longest such wait (s)


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
        capacity: Capacity | None = None,
        retry_5xx: bool = False,
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
        self.capacity = capacity or Capacity()
        self.inflight = 0  # proxied requests being answered now (admission control)
        self.overloaded = 0  # 503s for want of capacity
        self._outlier_errors = replicaset.outliers.consecutive_errors
        self.retry_5xx = retry_5xx
        self.pools: dict[Replica, UpstreamPool] = {}
        self.exchanges: set[UpstreamConnection] = set()  # in progress, on every pool
        self.clients: set[ClientConnection] = set()
        self.now = 0.0  # coarse clock for client deadlines, advanced by `run_deadlines`
        # Plain counters read by ringlb.admin.metrics at scrape time (see Replica.count_answer).
        self.retries = 0  # attempts after a failed one (same replica anew, or the next one)
        self.all_failed = 0  # 502s: every attempt failed
        self.no_replica = 0  # 503s: nothing to route to
        self.access_log: AccessLog | None = None  # None: off, at the cost of one check

    def protocol(self, role: str = BOTH) -> ClientConnection:
        """Returns the protocol for a new client connection on a listener with `role`."""
        return ClientConnection(self, asyncio.get_running_loop(), role)

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
        """Expires deadlines every DEADLINE_TICK: one sweep instead of a timer per request
        (client header, body and idle timeouts; the upstream timeout)."""
        loop = asyncio.get_running_loop()
        while True:
            self.now = now = loop.time()
            for client in [c for c in self.clients if 0.0 < c.deadline <= now]:
                client.expired()
            expire_exchanges(self.exchanges, now)
            await asyncio.sleep(DEADLINE_TICK)

    def _pool(self, replica: Replica) -> UpstreamPool:
        pool = self.pools.get(replica)
        if pool is None:
            capacity = self.capacity
            pool = UpstreamPool(
                replica,
                self.pool_size,
                self.connect_timeout,
                capacity.queue_size,
                capacity.queue_timeout,
                self.exchanges,
            )
            self.pools[replica] = pool
        return pool

    def _relay(
        self, request: ProxiedRequest, client: ClientConnection, tried: int
    ) -> ResponseRelay:
        """Returns the relay for an attempt after `tried` others. With `retry_5xx`, an
        idempotent request's 5xx is held back while another attempt is still possible."""
        retry_5xx = (
            self.retry_5xx
            and request.method in IDEMPOTENT
            and request.stream is None
            and tried + 1 < self.max_attempts
            and len(self.replicaset.snapshot.replicas) > tried + 1
        )
        return ResponseRelay(
            client.write,
            request.path,
            head=request.method == "HEAD",
            keep_alive=request.keep_alive,
            client_version=request.version,
            retry_5xx=retry_5xx,
        )

    def begin(self, request: ProxiedRequest, client: ClientConnection) -> None:
        """Starts answering a proxied request: admission, the policy's first choice, then
        the fast path or, failing that, a task. Ends with `client.done`."""
        if self.inflight >= self.capacity.max_inflight:
            self.overloaded += 1
            text = contract.overloaded(f"{self.inflight} requests in flight")
            client.done(self.answer_error(request, client, 503, text, http11.RETRY_AFTER))
            return
        self.inflight += 1
        client.proxying = True  # `client.done` gives the slot back
        upstream = client.upstream_request(request)
        snapshot = self.replicaset.snapshot
        # One pick per request: stateful policies such as round robin advance on each.
        first = snapshot.picker.pick(self.routing_key(request, client, snapshot), ())
        fast = first is not None and request.stream is None
        if fast and self.try_fast(request, upstream, client, first):
            return
        answer = self.forward(request, upstream, client, first=first)
        client.worker = client.loop.create_task(client.run_answer(answer))

    def _after_failure(
        self,
        replica: Replica,
        request: ProxiedRequest,
        relay: ResponseRelay,
        failure: UpstreamFailure,
    ) -> str:
        """Books a failed attempt and returns what follows: CUT_SHORT (part of the answer
        reached the client), GIVE_UP (no safe retry) or RETRY. A replica that failed hard
        leaves the ring; a stale keep-alive connection is not the replica's fault."""
        if not failure.stale:
            self.replicaset.eject(replica)
        if relay.started:
            log.warning("answer from %s cut short: %s", replica.name, failure)
            return CUT_SHORT
        stream = request.stream
        if stream is not None and stream.consumed:
            return GIVE_UP  # part of the body is gone with that replica: it cannot be replayed
        if failure.sent and request.method not in IDEMPOTENT:
            return GIVE_UP  # the replica may have acted on it: it is not sent again
        self.retries += 1
        return RETRY

    # -- the fast path: callbacks only ------------------------------------------------------

    def routing_key(
        self, request: ProxiedRequest, client: ClientConnection, snapshot: Snapshot
    ) -> int:
        """Returns the key a hash policy routes `request` on, computed once per request from
        the key source, or a random 6-digit id when the request carries none. Policies that
        do not route on keys get 0, and nothing is computed."""
        if not snapshot.keyed:
            return 0
        key = request.key
        if key is None:
            key = self.key_source.key(request.fields(), request.target, client.peer)
            request.key = key = self.random_key() if key is None else key
        return key

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
        relay = self._relay(request, client, 0)
        replica.inflight += 1
        client.upstream = conn

        def on_done(keep_alive: bool, failure: UpstreamFailure | None) -> None:
            replica.inflight -= 1
            client.upstream = None
            if failure is None:
                self._answered(replica, request, relay, conn, client)
                pool.release(conn, keep_alive)
                if relay.swallowed:
                    self.retries += 1
                    error = f"replica '{replica.name}': answered {relay.status}"
                    answer = self.forward(request, upstream, client, [replica], error)
                    client.worker = client.loop.create_task(client.run_answer(answer))
                    return
                client.done(relay.keep_alive)
                return
            conn.close()
            verdict = self._after_failure(replica, request, relay, failure)
            error = f"replica '{replica.name}': {failure}"
            if verdict == CUT_SHORT:
                client.done(False)
                return
            if verdict == GIVE_UP:
                client.done(self._answer_failure(request, client, error))
                return
            # Continue as the slow path would: on a fresh connection to the same replica
            # (a stale keep-alive) or on the next replica.
            if failure.stale:
                answer = self.forward(request, upstream, client, first=replica)
            else:
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
        tried = tried if tried is not None else []
        stream = request.stream
        for _ in range(self.max_attempts - len(tried)):
            if first is not None:
                replica, first = first, None
            else:
                snapshot = self.replicaset.snapshot
                replica = snapshot.picker.pick(self.routing_key(request, client, snapshot), tried)
            if replica is None:
                break
            relay = self._relay(request, client, len(tried))
            tried.append(replica)
            replica.inflight += 1
            try:
                await self._exchange(replica, request, upstream, relay, client)
            except UpstreamFailure as exc:
                error = f"replica '{replica.name}': {exc}"
                verdict = self._after_failure(replica, request, relay, exc)
                if verdict == CUT_SHORT:
                    return False
                if verdict == GIVE_UP:
                    break
                log.warning("request to %s failed: %s; retrying elsewhere", replica.name, exc)
                continue
            except BodyAborted:
                return False  # the client left inside its own request body
            except Overloaded as exc:
                self.overloaded += 1
                text = contract.overloaded(f"replica '{replica.name}': {exc}")
                return self.answer_error(request, client, 503, text, http11.RETRY_AFTER)
            finally:
                replica.inflight -= 1
            if relay.swallowed:
                error = f"replica '{replica.name}': answered {relay.status}"
                self.retries += 1
                continue
            # Unread body left on the client connection: it cannot carry another request.
            return relay.keep_alive and (stream is None or stream.complete)
        return self._answer_failure(request, client, error if tried else None)

    def _answer_failure(
        self, request: ProxiedRequest, client: ClientConnection, error: str | None
    ) -> bool:
        """Answers 502 naming the last `error`, or 503 when no replica was there (None);
        returns whether the client connection stays open."""
        if error:
            self.all_failed += 1
            return self.answer_error(request, client, 502, contract.upstream_failed(error))
        self.no_replica += 1
        return self.answer_error(request, client, 503, contract.NO_REPLICAS)

    def answer_error(
        self,
        request: ProxiedRequest,
        client: ClientConnection,
        status: int,
        text: str,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> bool:
        """Answers the balancer's own JSON error; returns whether the connection stays open
        (not when part of a streamed request body is left unread)."""
        stream = request.stream
        keep_alive = request.keep_alive and (stream is None or stream.complete)
        head = request.method == "HEAD"
        body = contract.failure(text)
        client.write(
            http11.json_response(status, body, keep_alive=keep_alive, head=head, extra=headers)
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
                if (
                    fresh
                    or not exc.stale
                    or relay.started
                    or (body is not None and body.consumed)
                    or request.method not in IDEMPOTENT
                ):
                    raise
                self.retries += 1
                continue  # a reused connection the replica had closed: once more, on a new one
            except BaseException:
                # Cancelled (the client left) or the client's body broke off: the connection
                # is mid-exchange, so it can never be reused.
                conn.close()
                raise
            finally:
                client.upstream = None
            self._answered(replica, request, relay, conn, client)
            pool.release(conn, keep_alive)
            return

    def _answered(
        self,
        replica: Replica,
        request: ProxiedRequest,
        relay: ResponseRelay,
        conn: UpstreamConnection,
        client: ClientConnection,
    ) -> None:
        """Books a complete answer: counters, outlier detection, the sampled access log."""
        seconds = conn.last_read - conn.sent_at
        status = relay.status
        replica.count_answer(status, seconds)
        if status >= 500:
            replica.errors_in_row += 1
            if replica.errors_in_row == self._outlier_errors:
                replica.errors_in_row = 0
                self.replicaset.eject_outlier(replica)
        else:
            replica.errors_in_row = 0
        if self.access_log is not None:
            self.access_log.record(request, replica, status, seconds, client.peer)
