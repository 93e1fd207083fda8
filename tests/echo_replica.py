"""A test replica that echoes what it received, run by `--replica-command` as a real process.

`/heartbeat` and `/home` behave as ringlb's replica; `/echo` returns the request as JSON;
`/status/<code>` answers with that status; everything else is the contract's 404.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os

from aiohttp import web

from ringlb import contract
from ringlb.replica.lifeline import die_with_parent


def make_app(server_id: str) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        digest, length = hashlib.sha256(), 0
        async for piece in request.content.iter_chunked(1 << 16):
            digest.update(piece)
            length += len(piece)
        doc = {
            "server": server_id,
            "method": request.method,
            "target": request.raw_path,
            "headers": [[k.decode(), v.decode()] for k, v in request.raw_headers],
            "body_length": length,
            "body_sha256": digest.hexdigest(),
        }
        return web.json_response(doc)

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def stream(request: web.Request) -> web.StreamResponse:
        """Sends `size` bytes in 64 KiB pieces, with a length or chunked (`?chunked`)."""
        size = int(request.match_info["size"])
        response = web.StreamResponse()
        if "chunked" in request.query:
            response.enable_chunked_encoding()
        else:
            response.content_length = size
        await response.prepare(request)
        piece = b"x" * 65536
        sent = 0
        while sent < size:
            n = min(len(piece), size - sent)
            await response.write(piece[:n])
            sent += n
        await response.write_eof()
        return response

    async def die(request: web.Request) -> web.Response:
        """Reads the request, then the process dies without answering (a crash mid-request)."""
        await request.read()
        os._exit(1)

    async def home(request: web.Request) -> web.Response:
        return web.Response(body=contract.home_message(server_id), content_type="application/json")

    async def heartbeat(request: web.Request) -> web.Response:
        return web.Response()

    async def other(request: web.Request) -> web.Response:
        body = contract.unknown_endpoint(request.path)
        return web.Response(status=404, body=body, content_type="application/json")

    async def sleep(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.match_info["seconds"]))
        return web.Response(text="slept")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/sleep/{seconds}", sleep)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/bytes/{size}", stream)
    app.router.add_route("*", "/die", die)
    app.router.add_get("/home", home)
    app.router.add_get("/heartbeat", heartbeat)
    app.router.add_route("*", "/{tail:.*}", other)
    return app


def replica_arguments() -> argparse.ArgumentParser:
    """Returns the command line every test replica takes (as `ringlb replica`)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    return parser


if __name__ == "__main__":
    die_with_parent()
    args = replica_arguments().parse_args()
    web.run_app(make_app(args.id), host=args.host, port=args.port, print=None, access_log=None)
