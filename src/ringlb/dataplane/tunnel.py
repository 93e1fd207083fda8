"""Tunnel: a client connection and a replica connection joined byte for byte, after the
replica answered an upgrade (WebSocket) with `101 Switching Protocols`.

The forwarding engine makes a tunnel as the last stage of an upgrade request (see
`Forwarding.switched`): both transports get a `TunnelEnd` as their protocol, which writes
what it reads to the other side. Back-pressure runs both ways: when one side's write buffer
passes its high-water mark, the other side's reading pauses until it drains (asyncio's
pause_writing / resume_writing), so a slow reader never makes us hold more than a buffer.

A tunnel ends when either side closes (the other is closed after its pending bytes), when
no byte went either way for the tunnel idle timeout (the client connection's deadline, swept
with the others), or when its replica leaves (its pool closes its tunnels: `/rm` after the
drain timeout, a dead replica at once).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from ringlb.model import Replica


class TunnelClient(Protocol):
    """The client connection a tunnel came from: its deadline is the tunnel's idle timeout,
    and it is told when the tunnel is over (to be counted out of its listener)."""

    deadline: float
    write_paused: bool

    def tunnel_active(self) -> None:
        """A byte went through: the idle deadline starts again."""
        ...

    def connection_lost(self, exc: Exception | None) -> None: ...


class TunnelPool(Protocol):
    """The replica's pool, which keeps the replica's tunnels to close them when it goes."""

    tunnels: set[Tunnel]


class TunnelEnd(asyncio.Protocol):
    """One side of a tunnel: what it reads goes to `peer`'s transport."""

    __slots__ = ("lost", "peer", "transport", "tunnel")

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport) -> None:
        self.tunnel = tunnel
        self.transport = transport
        self.peer: TunnelEnd = self
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)
        self.tunnel.client.tunnel_active()

    def eof_received(self) -> bool:
        return False  # a half-close ends the tunnel: close this side too (connection_lost)

    # The peer's writes wait for this side: stop reading the peer until they drain.
    def pause_writing(self) -> None:
        peer = self.peer.transport
        if not peer.is_closing():
            peer.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer.transport
        if not peer.is_closing():
            peer.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.tunnel.end(exc)


class Tunnel:
    """An open tunnel to `replica`; counted in `replica.tunnels` until it ends."""

    __slots__ = ("client", "client_end", "ended", "pool", "replica", "upstream_end")

    def __init__(
        self,
        client: TunnelClient,
        client_transport: asyncio.Transport,
        upstream_transport: asyncio.Transport,
        replica: Replica,
        pool: TunnelPool,
        *,
        to_client: bytes,
        to_replica: bytes,
    ) -> None:
        """Joins the two transports; `to_client` and `to_replica` are bytes already read
        past the upgrade's answer and request, sent first."""
        self.client = client
        self.replica = replica
        self.pool = pool
        self.ended = False
        self.client_end = TunnelEnd(self, client_transport)
        self.upstream_end = TunnelEnd(self, upstream_transport)
        self.client_end.peer, self.upstream_end.peer = self.upstream_end, self.client_end
        replica.tunnels += 1
        pool.tunnels.add(self)
        client_transport.set_protocol(self.client_end)
        upstream_transport.set_protocol(self.upstream_end)
        if to_client:
            client_transport.write(to_client)
        if to_replica:
            upstream_transport.write(to_replica)
        client_transport.resume_reading()
        if client.write_paused:  # the client has not taken the 101 yet: wait for it
            upstream_transport.pause_reading()
        else:
            upstream_transport.resume_reading()

    def end(self, exc: Exception | None = None) -> None:
        """Ends the tunnel once: closes both sides (pending bytes are sent first unless the
        side does not take them), counts it out."""
        if self.ended:
            return
        self.ended = True
        for end in (self.client_end, self.upstream_end):
            transport = end.transport
            if end.lost or transport.is_closing():
                continue
            # Bytes a side has not taken while the other is gone: nobody will wait for them.
            if transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
                transport.abort()
            else:
                transport.close()
        self.replica.tunnels -= 1
        self.pool.tunnels.discard(self)
        self.client.connection_lost(exc)

    def close(self) -> None:
        """Closes the tunnel from outside (its replica leaves)."""
        self.end(None)
