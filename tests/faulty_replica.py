"""A test replica that misbehaves on demand, run by `--replica-command` as a real process.

It is tests/echo_replica.py plus one switch, the fault mode, set at start (`--fault`) or
later by `GET /_fault/<mode>` sent straight to its port (answered, then applied):

- `none`: behaves as echo_replica (the default);
- `slow:<s>`: every request but `/heartbeat` is answered after <s> seconds;
- `error:<code>`: every request but `/heartbeat` is answered with <code> and a JSON error;
- `mute`: accepts connections and reads requests, `/heartbeat` included, and never answers;
- `exit:<code>` (at start only): exits at once with <code>, a replica that cannot start.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from echo_replica import make_app, replica_arguments
from ringlb.replica.lifeline import die_with_parent

FAULT_PREFIX = "/_fault/"


def parse_fault(spec: str) -> tuple[str, float]:
    """Returns (kind, argument) of a mode such as `slow:0.5`; raises ValueError if unknown."""
    kind, _, arg = spec.partition(":")
    if kind in ("none", "mute"):
        return kind, 0.0
    if kind in ("slow", "error", "exit"):
        return kind, float(arg)
    raise ValueError(f"unknown fault mode {spec!r}")


def make_faulty_app(server_id: str, fault: str) -> web.Application:
    state = {"fault": parse_fault(fault)}

    @web.middleware
    async def misbehave(request: web.Request, handler) -> web.StreamResponse:
        if request.path.startswith(FAULT_PREFIX):
            new = parse_fault(request.path[len(FAULT_PREFIX) :])
            response = web.json_response({"server": server_id, "fault": request.path})
            await response.prepare(request)
            await response.write_eof()
            state["fault"] = new  # from the next request on
            return response
        kind, arg = state["fault"]
        if kind == "mute":
            await asyncio.Event().wait()  # never set: the client waits until it gives up
        if request.path != "/heartbeat":
            if kind == "slow":
                await asyncio.sleep(arg)
            elif kind == "error":
                body = json.dumps({"message": "<Error> injected fault", "status": "failure"})
                return web.Response(status=int(arg), text=body, content_type="application/json")
        return await handler(request)

    app = make_app(server_id)
    app.middlewares.append(misbehave)
    return app


if __name__ == "__main__":
    die_with_parent()
    parser = replica_arguments()
    parser.add_argument("--fault", default="none")
    args = parser.parse_args()
    kind, code = parse_fault(args.fault)
    if kind == "exit":
        raise SystemExit(int(code))
    web.run_app(
        make_faulty_app(args.id, args.fault),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
        shutdown_timeout=1,
    )
