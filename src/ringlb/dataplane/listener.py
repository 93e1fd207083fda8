"""The client side of the data plane: listening sockets and the connections they accepted.

A `Listener` opens the balancer's ports (the contract's port, an admin-only port; an
`ringlb.dataplane.acceptor.Acceptor` takes their connections in) and keeps the set of open
client connections: it refuses connections beyond `max_connections` (503), and when the
balancer stops it drains them (no new requests, answers in progress finish, idle
keep-alive connections close) before closing what is left. A listener for HTTPS is
the same with a TLS context (`ringlb.dataplane.tls`) and the scheme `https`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from ringlb.dataplane.acceptor import Acceptor, bind
from ringlb.dataplane.connection import BOTH, ClientConnection, ClientLimits
from ringlb.dataplane.deadlines import DeadlineSweep
from ringlb.dataplane.forward import Forwarder, RequestHandler
from ringlb.dataplane.routing import LocalEndpoints

log = logging.getLogger("ringlb.proxy")

BACKLOG = 4096  # accept queue per listening socket
DRAIN_POLL = 0.01


class Listener:
    def __init__(
        self,
        forwarder: Forwarder,
        endpoints: LocalEndpoints,
        limits: ClientLimits,
        sweep: DeadlineSweep,
        clients: set[ClientConnection],
        max_connections: int,
    ) -> None:
        self.forwarder = forwarder
        self.endpoints = endpoints
        self.limits = limits
        self.sweep = sweep
        self.clients = clients  # every open client connection (the sweep watches them too)
        self.max_connections = max_connections
        self.servers: list[Acceptor] = []

    def admit(self, conn: ClientConnection) -> bool:
        if len(self.clients) >= self.max_connections:
            return False
        self.clients.add(conn)
        return True

    def forget(self, conn: ClientConnection) -> None:
        self.clients.discard(conn)

    def protocol(self, role: str = BOTH, proto: bytes = b"http") -> ClientConnection:
        """Returns the protocol for a new client connection on a listener with `role`."""
        return ClientConnection(self, role, proto)

    async def listen(
        self,
        host: str,
        port: int,
        role: str,
        *,
        tls: ssl.SSLContext | None = None,
        forwarder: RequestHandler | None = None,
        reuse_port: bool = False,
    ) -> Acceptor:
        """Accepts connections on `host:port` (HTTPS with `tls`; proxied requests go to
        `forwarder` when given, else to the listener's); returns the acceptor (its sockets
        say the port). With `reuse_port`, other processes accept on the same port too
        (SO_REUSEPORT: the kernel spreads new connections over them, and over the others
        when one is gone)."""
        proto = b"http" if tls is None else b"https"
        sockets = await bind(host, port, BACKLOG, reuse_port)
        acceptor = Acceptor(
            sockets,
            lambda: ClientConnection(self, role, proto, forwarder),
            tls,
            send_buffer=self.limits.send_buffer,
        )
        self.servers.append(acceptor)
        return acceptor

    async def drain(self, timeout: float) -> None:
        """Stops accepting, lets the answers in progress finish for up to `timeout` seconds
        (idle connections close at once, busy ones after their answer), then closes the
        rest."""
        for server in self.servers:
            server.close()
        for conn in list(self.clients):
            conn.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.clients and loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL)
        if self.clients:
            log.warning(
                "%d client connection(s) still busy after %g s: closed", len(self.clients), timeout
            )
        self.close()

    def close(self) -> None:
        for server in self.servers:
            server.close()
        self.servers.clear()
        for conn in list(self.clients):
            conn.abort()
