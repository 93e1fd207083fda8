"""A pooled connection the replica has just closed, before `connection_lost` says so.

When a replica dies, the event loop closes its connections' transports at once but calls
`connection_lost` a little later, after the other callbacks of the same turn, which may
take an idle connection from the pool. Writing to a closed transport raises, so the pool
must not hand such a connection out, and an exchange started on one must fail as stale
(nothing sent: safe to send again) instead of raising into the client's callback.
"""

from __future__ import annotations

import asyncio

from ringlb.dataplane.relay import ResponseRelay
from ringlb.dataplane.upstream import UpstreamFailure, UpstreamPool
from ringlb.model import Replica


async def test_a_connection_closing_but_not_yet_lost_is_neither_pooled_nor_written() -> None:
    server = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(Replica("server_1", 1, "127.0.0.1", port), 2, 1.0)
    try:
        conn = await pool.acquire()
        pool.release(conn, keep_alive=True)
        assert conn.transport is not None
        conn.transport.close()  # as on the replica's EOF: closing now, lost on a later turn
        assert not conn.closed and not conn.usable()
        assert pool.take_idle() is None

        outcomes: list[tuple[bool, UpstreamFailure | None]] = []
        relay = ResponseRelay(
            lambda data: None, "/", head=False, keep_alive=True, client_version="1.1"
        )
        conn.start(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", relay, False, 1.0, _record(outcomes))
        [(keep_alive, failure)] = outcomes
        assert not keep_alive and failure is not None
        assert failure.stale and not failure.sent
    finally:
        pool.close()
        server.close()
        await server.wait_closed()


def _record(outcomes: list):
    def on_done(keep_alive: bool, failure: UpstreamFailure | None) -> None:
        outcomes.append((keep_alive, failure))

    return on_done
