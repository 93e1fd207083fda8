"""WebSocket through a balancer to the replicas' `/ws` echo: throughput, then scale.

1. Echo throughput: `--streams` tunnels each send a `--size`-byte message and wait for its
   echo, in a loop, for `--seconds`: messages echoed per second, and the balancer's CPU per
   message (when `--pid` names its processes).
2. Scale: opens `--tunnels` tunnels at once (at most `--burst` handshakes in flight), one
   echo on each, all held open, then a second echo on every one: errors, and the
   balancer's resident memory before and while it holds them.

Prints one JSON object. The client is Python (`websockets`): on a small machine it is
likely the bottleneck of part 1, so compare balancers by their CPU per message.

    python bench/websocket.py --port 5000 --pid 1234
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

import procstat
from websockets.asyncio.client import ClientConnection, connect


async def throughput(url: str, streams: int, size: int, seconds: float, pids: list[int]) -> dict:
    message = b"m" * size
    stop = time.monotonic() + seconds
    errors: Counter[str] = Counter()

    async def stream() -> int:
        echoed = 0
        try:
            async with connect(url, max_size=None, compression=None) as ws:
                while time.monotonic() < stop:
                    await ws.send(message)
                    if await ws.recv() != message:
                        errors["wrong echo"] += 1
                    echoed += 1
        except Exception as exc:
            errors[type(exc).__name__] += 1
        return echoed

    cpu = procstat.total_cpu_seconds(pids) if pids else 0.0
    started = time.monotonic()
    counts = await asyncio.gather(*(stream() for _ in range(streams)))
    wall = time.monotonic() - started
    echoed = sum(counts)
    result = {
        "streams": streams,
        "message_bytes": size,
        "messages_per_s": round(echoed / wall),
        "mib_per_s_each_way": round(echoed * size / wall / 2**20, 1),  # sent, and echoed
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
    }
    if pids:
        used = procstat.total_cpu_seconds(pids) - cpu
        result["balancer_cpu_us_per_message"] = round(used * 1e6 / max(echoed, 1), 1)
    return result


async def scale(url: str, tunnels: int, burst: int, pids: list[int]) -> dict:
    errors: Counter[str] = Counter()
    gate = asyncio.Semaphore(burst)
    before = procstat.total_memory_kib(pids)["VmRSS"] if pids else 0

    async def open_one(i: int) -> ClientConnection | None:
        async with gate:
            try:
                ws = await asyncio.wait_for(connect(url, ping_interval=None), 30)
                await ws.send(f"hello {i}")
                if await asyncio.wait_for(ws.recv(), 30) != f"hello {i}":
                    errors["wrong echo"] += 1
                return ws
            except Exception as exc:
                errors[f"open: {type(exc).__name__}"] += 1
                return None

    async def again(i: int, ws: ClientConnection) -> None:
        try:
            await ws.send(f"again {i}")
            if await asyncio.wait_for(ws.recv(), 30) != f"again {i}":
                errors["wrong echo"] += 1
        except Exception as exc:
            errors[f"echo: {type(exc).__name__}"] += 1

    started = time.monotonic()
    opened = await asyncio.gather(*(open_one(i) for i in range(tunnels)))
    open_s = time.monotonic() - started
    held = [ws for ws in opened if ws is not None]
    started = time.monotonic()
    await asyncio.gather(*(again(i, ws) for i, ws in enumerate(held)))
    echo_s = time.monotonic() - started
    during = procstat.total_memory_kib(pids)["VmRSS"] if pids else 0
    await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    return {
        "tunnels": tunnels,
        "held": len(held),
        "open_seconds": round(open_s, 2),
        "second_echo_seconds": round(echo_s, 2),
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "rss_mib_before": round(before / 1024, 1),
        "rss_mib_holding": round(during / 1024, 1),
        "rss_growth_mib": round((during - before) / 1024, 1),
    }


async def main(args: argparse.Namespace) -> dict:
    url = f"ws://127.0.0.1:{args.port}/ws"
    result = {"throughput": await throughput(url, args.streams, args.size, args.seconds, args.pid)}
    if args.tunnels:
        result["scale"] = await scale(url, args.tunnels, args.burst, args.pid)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, action="append", default=[])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tunnels", type=int, default=1000, help="scale part (0: skip)")
    parser.add_argument("--burst", type=int, default=100)
    from ringlb.eventloop import install_fast_loop

    install_fast_loop()  # uvloop, and the open-file limit raised for the tunnels
    print(json.dumps(asyncio.run(main(parser.parse_args()))))
    sys.exit(0)
