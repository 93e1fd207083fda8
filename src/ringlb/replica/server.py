"""The replica web server: `/home`, `/heartbeat`, a WebSocket echo on `/ws`, and a JSON
404 for everything else."""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

from ringlb import contract

log = logging.getLogger("ringlb.replica")

# Largest WebSocket message /ws takes (aiohttp's default, 4 MiB, is below what tests send).
MAX_WS_MESSAGE = 64 * 1024 * 1024


def _json(status: int, body: bytes) -> web.Response:
    return web.Response(status=status, body=body, content_type=contract.JSON_CONTENT_TYPE)


def make_app(server_id: str) -> web.Application:
    """Returns the replica application answering as `server_id`."""
    home_body = contract.home_message(server_id)

    async def home(request: web.Request) -> web.Response:
        return _json(200, home_body)

    async def heartbeat(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def echo(request: web.Request) -> web.StreamResponse:
        """Sends every text or binary message back; the 101 names the replica
        (X-Server-ID), so a client can see where its tunnel goes. `?close_after=N`: the
        replica closes the connection itself after N echoes."""
        ws = web.WebSocketResponse(max_msg_size=MAX_WS_MESSAGE)
        ws.headers["X-Server-ID"] = server_id
        close_after = request.query.get("close_after", "")
        left = int(close_after) if close_after.isdigit() else -1
        await ws.prepare(request)
        async for message in ws:
            if message.type == web.WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type == web.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            left -= 1
            if left == 0:
                await ws.close(message=b"close_after")
        return ws

    app = web.Application()
    app.router.add_get("/home", home)
    app.router.add_get("/heartbeat", heartbeat)
    app.router.add_get("/ws", echo)
    app.middlewares.append(_unknown_endpoint)
    return app


@web.middleware
async def _unknown_endpoint(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Turns aiohttp's 404 and 405 into the contract's JSON 404 naming the path."""
    try:
        return await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        return _json(404, contract.unknown_endpoint(request.path))


def serve_replica(
    server_id: str, host: str, port: int, tls_cert: str | None = None, tls_key: str | None = None
) -> None:
    """Runs the replica in the foreground until SIGTERM or SIGINT; over HTTPS when given a
    certificate (for a balancer with upstream_tls)."""
    from ringlb.eventloop import install_fast_loop

    tls = None
    if tls_cert is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(tls_cert, tls_key)

    install_fast_loop()
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {server_id} %(message)s")
    web.run_app(
        make_app(server_id),
        host=host,
        port=port,
        print=None,
        access_log=None,
        handle_signals=True,
        backlog=4096,
        ssl_context=tls,
        loop=asyncio.new_event_loop(),
    )
