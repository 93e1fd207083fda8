"""Connection scale: opens N keep-alive connections to a balancer, sends a request on each,
keeps them all open, then sends a second round on every one of them at once.

Prints one JSON object: errors per round, the wall time of each round, and the balancer's
resident memory while it holds every connection (when `--pid` names its processes).

    python bench/manyconn.py --port 5000 --connections 10000 --pid 1234
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter

import procstat

REQUEST = b"GET %s HTTP/1.1\r\nHost: bench\r\n\r\n"


class Client:
    def __init__(self, port: int, path: str, timeout: float) -> None:
        self.port = port
        self.request = REQUEST % path.encode()
        self.timeout = timeout
        self.errors: Counter[str] = Counter()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            self.errors[f"connect: {type(exc).__name__}"] += 1
            return None

    async def exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bool:
        """Sends one request and reads the whole answer; returns whether it was a 200."""
        reader, writer = conn
        try:
            writer.write(self.request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await asyncio.wait_for(reader.readexactly(length), self.timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.errors[f"exchange: {type(exc).__name__}"] += 1
            return False
        if status != 200:
            self.errors[f"status {status}"] += 1
            return False
        return True


async def hold(args: argparse.Namespace) -> dict:
    client = Client(args.port, args.path, args.timeout)
    opening = asyncio.Semaphore(args.connect_concurrency)
    result: dict = {"connections": args.connections}

    async def open_and_ask():
        async with opening:
            conn = await client.connect()
            if conn is not None and not await client.exchange(conn):
                conn[1].close()
                return None
            return conn

    started = time.monotonic()
    conns = await asyncio.gather(*(open_and_ask() for _ in range(args.connections)))
    live = [c for c in conns if c is not None]
    result["round1"] = {"seconds": round(time.monotonic() - started, 2), "ok": len(live)}
    result["memory_kib_holding"] = _memory(args.pid)

    # Every held connection asks again, all at once.
    started = time.monotonic()
    answered = await asyncio.gather(*(client.exchange(c) for c in live))
    result["round2"] = {
        "seconds": round(time.monotonic() - started, 2),
        "ok": sum(answered),
    }
    result["memory_kib_after_round2"] = _memory(args.pid)
    result["open_at_end"] = sum(1 for _, w in live if not w.is_closing())
    result["errors"] = sum(client.errors.values())
    result["error_kinds"] = dict(client.errors)
    for _, writer in live:
        writer.close()
    return result


def _memory(pids: list[int]) -> dict[str, int] | None:
    return procstat.total_memory_kib(pids) if pids else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--path", default="/home")
    parser.add_argument("--pid", type=int, action="append", default=[], help="balancer pid(s)")
    parser.add_argument("--connect-concurrency", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=30.0, help="per connect/answer (s)")
    parser.add_argument("--deadline", type=float, default=180.0, help="whole run (s)")
    args = parser.parse_args()

    # Each connection is a file descriptor: lift the soft limit as far as the hard one allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    if min(need, hard) < need:
        print(f"manyconn: open-file limit {hard} is below {need}", file=sys.stderr)
        return 2
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass

    async def bounded():
        return await asyncio.wait_for(hold(args), args.deadline)

    try:
        result = asyncio.run(bounded())
    except TimeoutError:
        result = {"connections": args.connections, "errors": -1, "error_kinds": {"deadline": 1}}
    print(json.dumps(result))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
