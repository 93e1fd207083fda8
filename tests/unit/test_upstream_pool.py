"""A pooled connection the replica has just closed, before `connection_lost` says so; an
exchange held on a replica that is forgotten.

When a replica dies, the event loop closes its connections' transports at once but calls
`connection_lost` a little later, after the other callbacks of the same turn, which may
take an idle connection from the pool. Writing to a closed transport raises, so the pool
must not hand such a connection out, and an exchange started on one must fail as stale
(nothing sent: safe to send again) instead of raising into the client's callback.
"""

from __future__ import annotations

import asyncio

from ringlb.dataplane.pool import UpstreamPools
from ringlb.dataplane.relay import ResponseRelay
from ringlb.dataplane.request import Request
from ringlb.dataplane.retry import Stage
from ringlb.dataplane.upstream import UpstreamConnection, UpstreamFailure
from ringlb.model import Replica


class Recorder:
    """An exchange owner that records how the attempt ended."""

    def __init__(self) -> None:
        self.ends: list[tuple[str, object]] = []

    def answered(self, conn: UpstreamConnection, keep_alive: bool) -> None:
        self.ends.append(("answered", keep_alive))

    def failed(self, conn: UpstreamConnection, failure: UpstreamFailure) -> None:
        self.ends.append(("failed", failure))


async def test_a_connection_closing_but_not_yet_lost_is_neither_pooled_nor_written() -> None:
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pools = UpstreamPools(2, 1.0, 8, 1.0)
    pool = pools.add(Replica("server_1", 1, "127.0.0.1", port))
    try:
        conn = await pool.acquire(fresh=False)
        pool.release(conn, keep_alive=True)
        assert conn.transport is not None
        conn.transport.close()  # as on the replica's EOF: closing now, lost on a later turn
        assert not conn.closed and not conn.usable()
        assert pool.take_idle() is None

        head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        request = Request("GET", b"/", "/", head)
        owner = Recorder()
        conn.start(head, ResponseRelay(lambda data: None, request, False), owner, False)
        [(end, failure)] = owner.ends
        assert end == "failed" and isinstance(failure, UpstreamFailure)
        assert failure.stage is Stage.UNSENT
    finally:
        pools.close()
        server.close()
        await server.wait_closed()


async def test_forgetting_a_replica_fails_the_exchanges_held_on_it() -> None:
    """A replica whose node is gone never answers nor resets: when the control plane
    forgets it, its exchanges fail at once (to be retried elsewhere), not after the
    upstream timeout."""
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]  # accepts, reads nothing, never answers
    pools = UpstreamPools(2, 1.0, 8, 1.0)
    replica = Replica("server_1", 1, "127.0.0.1", port)
    pool = pools.add(replica)
    try:
        conn = await pool.acquire(fresh=True)
        head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        owner = Recorder()
        relay = ResponseRelay(lambda data: None, Request("GET", b"/", "/", head), False)
        conn.start(head, relay, owner, False)
        assert owner.ends == [] and conn in pools.busy
        pools.forget(replica)
        [(end, failure)] = owner.ends
        assert end == "failed" and isinstance(failure, UpstreamFailure)
        assert failure.stage is Stage.SENT and str(failure) == "the replica is gone"
        assert conn not in pools.busy and conn.closed
    finally:
        pools.close()
        server.close()
        await server.wait_closed()
