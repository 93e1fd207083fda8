"""The forwarding engine: every proxied request, from the policy's pick to the last byte.

`Forwarder.begin` admits a request, reads the routing snapshot once, and hands the request
to a `Forwarding`: one small object per request that drives its attempts. An attempt is
callbacks only when the chosen replica has an idle pooled connection and the body is in
hand (the common case: an early return, no task); otherwise it becomes a coroutine for what
must be awaited (a new connection, a free slot, a body streaming after the head). Either
way the upstream connection reports the end of the attempt to the same two methods,
`answered` and `failed`, and `ringlb.dataplane.retry.decide` alone says what a failure
leads to. An upgrade request (WebSocket) is one more way an attempt ends: the replica's
101 makes `switched` join the two connections into a `Tunnel`. The engine never blocks,
sleeps, locks or calls a runtime; it reaches the control plane only through `Routing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from ringlb import contract
from ringlb.dataplane import http11
from ringlb.dataplane.access_log import AccessLog
from ringlb.dataplane.body_stream import BodyAborted
from ringlb.dataplane.keys import KeySource
from ringlb.dataplane.pool import Overloaded, UpstreamPools
from ringlb.dataplane.relay import ResponseRelay
from ringlb.dataplane.request import Request, UpgradeRequest
from ringlb.dataplane.retry import IDEMPOTENT, Stage, Verdict, blames_replica, decide
from ringlb.dataplane.routing import Routing
from ringlb.dataplane.tunnel import Tunnel
from ringlb.dataplane.upstream import UpstreamConnection, UpstreamFailure
from ringlb.model import Replica

log = logging.getLogger("ringlb.proxy")


class Client(Protocol):
    """The client connection a request came on, as the engine sees it."""

    peer: bytes
    forwarding: Forwarding | None

    def write(self, data: bytes) -> None: ...

    def answered(self, keep_alive: bool) -> None:
        """The answer is complete; `keep_alive`: the connection may carry another request."""
        ...

    def abort(self) -> None:
        """Part of the answer reached the client and the rest cannot come: end it now."""
        ...

    def switch(self, answer: bytes) -> tuple[asyncio.Transport, bytes] | None:
        """Writes a 101 `answer`; returns the transport for a tunnel and the bytes the
        client sent past its request (None: the client is gone)."""
        ...


class Forwarder:
    """Admits proxied requests and routes them; holds the counters /metrics reads."""

    def __init__(
        self,
        routing: Routing,
        pools: UpstreamPools,
        *,
        key_source: KeySource,
        random_key: Callable[[], int],
        max_attempts: int,
        max_inflight: int,
        retry_5xx: bool,
        access_log: AccessLog | None,
    ) -> None:
        self.routing = routing
        self.pools = pools
        self.by_replica = pools.by_replica
        self.key_source = key_source
        self.random_key = random_key
        self.max_attempts = max_attempts
        self.max_inflight = max_inflight
        self.retry_5xx = retry_5xx
        self.access_log = access_log  # None: off, at the cost of one check per answer
        self.inflight = 0  # proxied requests being answered now (admission control)
        # Plain counters read by ringlb.admin.metrics at scrape time (see Replica.count_answer).
        self.retries = 0  # attempts after a failed one (same replica anew, or the next one)
        self.all_failed = 0  # 502s: every attempt failed
        self.no_replica = 0  # 503s: nothing to route to
        self.overloaded = 0  # 503s for want of capacity

    def begin(self, request: Request, client: Client) -> None:
        """Starts answering `request`; the answer ends with `client.answered` (or abort)."""
        forwarding = Forwarding(self, client, request)
        client.forwarding = forwarding
        self.inflight += 1
        if self.inflight > self.max_inflight:
            self.overloaded += 1
            text = contract.overloaded(f"{self.inflight - 1} requests in flight")
            forwarding.answer_error(503, text, http11.RETRY_AFTER)
            return
        snapshot = self.routing.snapshot
        # One pick per request: stateful policies such as round robin advance on each.
        key = self.routing_key(request, client.peer) if snapshot.keyed else 0
        forwarding.attempt(snapshot.picker.pick(key, ()))

    def routing_key(self, request: Request, peer: bytes) -> int:
        """Returns the key a hash policy routes `request` on, computed once per request from
        the key source, or a random 6-digit id when the request carries none."""
        key = request.key
        if key is None:
            key = self.key_source.key(request.fields(), request.target, peer)
            request.key = key = self.random_key() if key is None else key
        return key


class Forwarding:
    """One proxied request on its way: its attempts, until the client has its answer.

    `replica`, `conn` and `relay` belong to the attempt in progress; `tried` lists the
    replicas that failed this request (made on the first failure).
    """

    __slots__ = (
        "client",
        "conn",
        "error",
        "forwarder",
        "relay",
        "replica",
        "request",
        "task",
        "tried",
    )

    def __init__(self, forwarder: Forwarder, client: Client, request: Request) -> None:
        self.forwarder = forwarder
        self.client: Client | None = client  # None once the answer is over
        self.request = request
        self.replica: Replica | None = None
        self.conn: UpstreamConnection | None = None
        self.relay: ResponseRelay | None = None
        self.task: asyncio.Task[None] | None = None
        self.tried: list[Replica] | None = None

    # -- attempts ------------------------------------------------------------------------

    def attempt(self, replica: Replica | None, fresh: bool = False) -> None:
        """Tries `replica` (None: no replica left); `fresh`: on a new connection."""
        if replica is None:
            self._give_up()
            return
        forwarder = self.forwarder
        request = self.request
        self.replica = replica
        replica.inflight += 1
        retry_5xx = forwarder.retry_5xx and self._may_retry_5xx()
        self.relay = relay = ResponseRelay(self.client.write, request, retry_5xx)  # type: ignore[union-attr]
        if not fresh and request.stream is None:
            pool = forwarder.by_replica.get(replica)
            conn = pool.take_idle() if pool is not None else None
            if conn is not None:  # the common case: an idle pooled connection, no task
                self.conn = conn
                conn.start(request.head, relay, self, request.head_only)
                return
        self.task = asyncio.get_running_loop().create_task(self._attempt_slowly(replica, fresh))

    async def _attempt_slowly(self, replica: Replica, fresh: bool) -> None:
        """The rest of an attempt that has to wait: for a connection, then for the body."""
        forwarder = self.forwarder
        pool = forwarder.by_replica.get(replica) or forwarder.pools.add(replica)
        try:
            conn = await pool.acquire(fresh)
        except UpstreamFailure as failure:
            self.task = None
            self.failed(None, failure)
            return
        except Overloaded as exc:
            self.task = None
            self._overloaded(replica, exc)
            return
        request = self.request
        self.conn = conn
        conn.start(request.head, self.relay, self, request.head_only)  # type: ignore[arg-type]
        stream = request.stream
        if stream is not None and self.conn is conn:
            # A body that broke off: the client connection ends the request, it knows why.
            with contextlib.suppress(BodyAborted):
                await conn.pump(stream)
        if self.task is asyncio.current_task():
            self.task = None

    def _may_retry_5xx(self) -> bool:
        """Whether a 5xx answer of this attempt may be held back for another one."""
        request = self.request
        tried = len(self.tried) if self.tried else 0
        return (
            request.method in IDEMPOTENT
            and request.stream is None
            and tried + 1 < self.forwarder.max_attempts
            and len(self.forwarder.routing.snapshot.replicas) > tried + 1
        )

    # -- how an attempt ends (called by the upstream connection) ---------------------------

    def answered(self, conn: UpstreamConnection, keep_alive: bool) -> None:
        """The replica's whole answer is relayed (or held back: a 5xx, to try another)."""
        # (No asserts on this path: it runs for every request.)
        replica: Replica = self.replica  # type: ignore[assignment]
        self.replica = self.conn = None
        replica.inflight -= 1
        relay: ResponseRelay = self.relay  # type: ignore[assignment]
        status = relay.status
        seconds = conn.last_read - conn.sent_at
        replica.count_answer(status, seconds)
        forwarder = self.forwarder
        if status >= 500:
            forwarder.routing.report_error(replica)
        elif replica.errors_in_row:
            replica.errors_in_row = 0
        request = self.request
        if forwarder.access_log is not None and self.client is not None:
            forwarder.access_log.record(request, replica, status, seconds, self.client.peer)
        stream = request.stream
        if stream is None:
            conn.pool.release(conn, keep_alive)
        else:
            self._stop_task()  # the replica answered before the whole body went: stop it
            conn.pool.release(conn, keep_alive and stream.complete)
        if relay.swallowed:
            self._after_failure(replica, UpstreamFailure(f"answered {status}", Stage.ANSWERED_5XX))
            return
        # Unread body left on the client connection: it cannot carry another request.
        self._finish(relay.keep_alive and (stream is None or stream.complete))

    def switched(self, conn: UpstreamConnection, header_lines: bytes, rest: bytes) -> None:
        """The replica switched protocols: the request ends, and its connection and the
        client's become a tunnel (or close, when the client left or never asked)."""
        request = self.request
        if not isinstance(request, UpgradeRequest):
            self.failed(conn, UpstreamFailure("bad response: 101 unasked", Stage.ANSWER))
            return
        replica: Replica = self.replica  # type: ignore[assignment]
        self.replica = self.conn = None
        replica.inflight -= 1
        replica.count_answer(101, conn.last_read - conn.sent_at)
        if replica.errors_in_row:
            replica.errors_in_row = 0
        self.forwarder.inflight -= 1
        client, self.client = self.client, None
        switched = (
            client.switch(http11.switching_protocols(header_lines, request.upgrade))
            if client is not None
            else None
        )
        upstream = conn.transport
        if switched is None or upstream is None or upstream.is_closing():
            conn.close()
            if client is not None:
                client.abort()
            return
        client_transport, early = switched
        pool = conn.pool
        pool.detach(conn)  # its connection_lost will not come: the tunnel's will
        Tunnel(
            client,  # type: ignore[arg-type]
            client_transport,
            upstream,
            replica,
            pool,
            to_client=rest,
            to_replica=early,
        )

    def failed(self, conn: UpstreamConnection | None, failure: UpstreamFailure) -> None:
        """The attempt failed; `conn` (None when none was had) cannot be used again."""
        replica = self.replica
        assert replica is not None
        self.replica = self.conn = None
        replica.inflight -= 1
        if conn is not None:
            conn.close()
        self._stop_task()
        if blames_replica(failure.stage):
            self.forwarder.routing.eject(replica)
        self._after_failure(replica, failure)

    def _after_failure(self, replica: Replica, failure: UpstreamFailure) -> None:
        request, relay, forwarder = self.request, self.relay, self.forwarder
        assert relay is not None
        stream = request.stream
        verdict = decide(
            failure.stage,
            idempotent=request.method in IDEMPOTENT,
            body_consumed=stream is not None and stream.consumed > 0,
            answer_started=relay.started,
            attempts_left=forwarder.max_attempts - (len(self.tried) if self.tried else 0) - 1,
        )
        error = f"replica '{replica.name}': {failure}"
        if verdict is Verdict.CUT_SHORT:
            log.warning("answer from %s cut short: %s", replica.name, failure)
            self._cut_short()
            return
        if self.tried is None:
            self.tried = []
        if verdict is Verdict.RETRY_SAME:
            forwarder.retries += 1
            self.attempt(replica, fresh=True)
            return
        self.tried.append(replica)
        self.error = error
        if verdict is Verdict.GIVE_UP:
            self._give_up()
            return
        forwarder.retries += 1
        if failure.stage is not Stage.ANSWERED_5XX:
            log.warning("request to %s failed: %s; retrying elsewhere", replica.name, failure)
        snapshot = forwarder.routing.snapshot
        key = forwarder.routing_key(request, self.client.peer) if snapshot.keyed else 0  # type: ignore[union-attr]
        self.attempt(snapshot.picker.pick(key, self.tried))

    def _overloaded(self, replica: Replica, exc: Overloaded) -> None:
        self.replica = None
        replica.inflight -= 1
        self.forwarder.overloaded += 1
        text = contract.overloaded(f"replica '{replica.name}': {exc}")
        self.answer_error(503, text, http11.RETRY_AFTER)

    def _give_up(self) -> None:
        """Answers 502 naming the last failure, or 503 when no replica was there at all."""
        forwarder = self.forwarder
        if self.tried:
            forwarder.all_failed += 1
            self.answer_error(502, contract.upstream_failed(self.error))
        else:
            forwarder.no_replica += 1
            self.answer_error(503, contract.NO_REPLICAS)

    # -- the end -------------------------------------------------------------------------

    def answer_started(self) -> bool:
        """Whether a byte of a replica's answer reached the client."""
        return self.relay is not None and self.relay.started

    def answer_error(
        self, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        """Answers the balancer's own JSON error and ends the request (the connection
        stays open unless part of a streamed request body is left unread)."""
        request = self.request
        stream = request.stream
        keep_alive = request.keep_alive and (stream is None or stream.complete)
        body = contract.failure(text)
        client = self.client
        assert client is not None
        client.write(
            http11.json_response(
                status, body, keep_alive=keep_alive, head=request.head_only, extra=headers
            )
        )
        self._finish(keep_alive)

    def _finish(self, keep_alive: bool) -> None:
        self.forwarder.inflight -= 1
        client, self.client = self.client, None
        client.answered(keep_alive)  # type: ignore[union-attr]

    def _cut_short(self) -> None:
        self.forwarder.inflight -= 1
        client, self.client = self.client, None
        assert client is not None
        client.abort()

    def cancel(self) -> None:
        """Ends the request without an answer (the client left, or its request broke off):
        the attempt in progress stops, and its connection closes (it is mid-exchange)."""
        if self.client is None:
            return
        self.client = None
        self.forwarder.inflight -= 1
        replica, conn = self.replica, self.conn
        self.replica = self.conn = None
        if replica is not None:
            replica.inflight -= 1
        if conn is not None:
            conn.abandon()
        self._stop_task()

    def _stop_task(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
