"""The least a Python proxy on uvloop and httptools can do: a yardstick, not a balancer.

Round robin over pooled keep-alive connections; the request and the answer are forwarded as
received (no header rewriting, no limits, no timeouts, no retries, no metrics, no admin
API). httptools only finds where each message ends. Whatever CPU per request this costs is
the floor under any balancer written the same way; `make bench` runs it beside ringlb so
that the price of ringlb's features is a difference of two columns measured together.

    python bench/floor_proxy.py LISTEN_PORT REPLICA_PORT...
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections import deque

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    """One keep-alive connection to a replica; one exchange at a time."""

    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.client: Client | None = None
        self.answer: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answer.append(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        client, self.client = self.client, None
        answer, self.answer = b"".join(self.answer), []
        self.pool.append(self)
        if client is not None:
            client.answered(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        if self.client is not None:
            self.client.close()


class Client(asyncio.Protocol):
    """One client connection; one request per read (as wrk sends them), answered in order."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[bytes] = deque()
        self.head = bytearray()
        self.busy = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.head += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_message_complete(self) -> None:
        if not self.head:  # a second request in the same read: pipelining is not supported
            self.close()
            return
        self.pending.append(bytes(self.head))
        self.head.clear()
        if not self.busy:
            self.next()

    def next(self) -> None:
        if not self.pending:
            self.busy = False
            return
        self.busy = True
        self.router.forward(self.pending.popleft(), self)

    def answered(self, answer: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(answer)
        self.next()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Router:
    def __init__(self, ports: list[int]) -> None:
        self.pools = {port: [] for port in ports}
        self.turns = itertools.cycle(ports)

    def forward(self, request: bytes, client: Client) -> None:
        port = next(self.turns)
        pool = self.pools[port]
        if pool:
            self.send(pool.pop(), request, client)
        else:
            asyncio.get_running_loop().create_task(self.connect(port, request, client))

    async def connect(self, port: int, request: bytes, client: Client) -> None:
        loop = asyncio.get_running_loop()
        pool = self.pools[port]
        try:
            _, upstream = await loop.create_connection(lambda: Upstream(pool), "127.0.0.1", port)
        except OSError:
            client.close()
            return
        self.send(upstream, request, client)

    @staticmethod
    def send(upstream: Upstream, request: bytes, client: Client) -> None:
        upstream.client = client
        assert upstream.transport is not None
        upstream.transport.write(request)


async def serve(listen: int, ports: list[int]) -> None:
    router = Router(ports)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(router), "127.0.0.1", listen, backlog=4096)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), [int(p) for p in sys.argv[2:]]))
