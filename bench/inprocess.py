"""The Python work of one proxied request, without the network: a steadier figure than wrk's.

Drives ringlb's own `ClientConnection` and `UpstreamConnection` with in-memory transports:
a GET goes in, the request bytes come out towards a replica, a recorded replica answer goes
back in and the client's answer comes out. Reports CPU time per request (the best of
several batches) and, counted with `sys.settrace`, the bytecode instructions and Python
calls per request, by function: the count does not depend on what else the machine runs.

    .venv/bin/python bench/inprocess.py [--policy round_robin] [--key] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import uvloop

import ringlb
from ringlb.app import Balancer
from ringlb.config import Settings
from ringlb.dataplane.testing import MemoryTransport, pooled_connections
from ringlb.model import Replica, Snapshot

REQUEST = b"GET /home HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n"
KEYED_REQUEST = REQUEST[:-2] + b"X-Request-ID: 123456\r\n\r\n"
# What ringlb's replica answers to GET /home, byte for byte.
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 63\r\n"
    b"Date: Thu, 26 Nov 2026 15:24:31 GMT\r\nServer: Python/3.11 aiohttp/3.14.5\r\n\r\n"
    b'{"message":"Hello from Server: server_9","status":"successful"}'
)


class SinkTransport(MemoryTransport):
    """Records writes into a list shared by every transport, as (transport, bytes)."""

    sink: list = []

    def write(self, data: bytes) -> None:
        self.sink.append((self, data))


def rig(policy: str, request: bytes):
    """Returns a function that proxies one request through a balancer with 3 replicas."""
    balancer = Balancer(Settings(policy=policy))
    replicas = [Replica(f"server_{i}", i, "127.0.0.1", 6000 + i) for i in (1, 2, 3)]
    chosen = balancer.replicaset.policy
    balancer.replicaset.snapshot = Snapshot(
        1, tuple(replicas), chosen.build(replicas), chosen.keyed
    )
    sink = SinkTransport.sink
    upstreams = {}
    for replica in replicas:
        # Idle pooled connections, as under steady load.
        for transport in pooled_connections(balancer.pools, replica, 2, SinkTransport):
            upstreams[transport] = transport.protocol
    client_transport = SinkTransport().attach(balancer.listener.protocol())
    client = client_transport.protocol

    def one() -> None:
        client.data_received(request)
        to_replica, _ = sink.pop()
        upstreams[to_replica].data_received(ANSWER)
        to_client, answer = sink.pop()
        assert to_client is client_transport and answer.startswith(b"HTTP/1.1 200")

    return one


def count(one, requests: int) -> tuple[collections.Counter, collections.Counter]:
    """Returns the bytecode instructions and the calls per function over `requests`."""
    ops: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def tracer(frame, event, arg):
        if event == "call":
            frame.f_trace_opcodes = True
            calls[frame.f_code.co_qualname] += 1
        elif event == "opcode":
            ops[frame.f_code.co_qualname] += 1
        return tracer

    sys.settrace(tracer)
    try:
        for _ in range(requests):
            one()
    finally:
        sys.settrace(None)
    for harness in ("count", "rig.<locals>.one", "SinkTransport.write"):
        ops.pop(harness, None)
        calls.pop(harness, None)
    return ops, calls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="round_robin")
    parser.add_argument("--key", action="store_true", help="send X-Request-ID")
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    one = rig(args.policy, KEYED_REQUEST if args.key else REQUEST)
    for _ in range(1000):
        one()
    best = min(_timed(one, args.batch) for _ in range(7))
    sampled = 200
    ops, calls = count(one, sampled)
    counted = (
        f"{sum(ops.values()) / sampled:.0f} bytecode instructions"
        if ops
        else "bytecode instructions not counted (no opcode events from this interpreter)"
    )
    print(
        f"{args.policy}: {best * 1e6:.2f} µs of CPU per request (best of 7 batches), "
        f"{counted} in {sum(calls.values()) / sampled:.1f} Python calls"
        f" (hot path {ringlb.BUILD}; its compiled functions are neither counted nor called)"
    )
    for name, n in ops.most_common(args.top):
        print(f"  {n / sampled:6.1f} instructions {calls[name] / sampled:4.1f} calls  {name}")


def _timed(one, requests: int) -> float:
    started = time.process_time()
    for _ in range(requests):
        one()
    return (time.process_time() - started) / requests


if __name__ == "__main__":
    uvloop.run(main())
