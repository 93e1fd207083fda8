"""In-memory transports for the data plane, shipped for tests and the in-process benchmark.

Like httpx's MockTransport, they let a test drive the real `ClientConnection` and
`UpstreamConnection` without a socket: bytes written by the data plane are recorded, bytes
"received" are handed to the protocol directly, and closing a transport calls the
protocol's `connection_lost` on the next loop turn, as a real transport does.
"""

from __future__ import annotations

import asyncio

from ringlb.dataplane.pool import UpstreamPools
from ringlb.dataplane.upstream import UpstreamConnection
from ringlb.model import Replica


class MemoryTransport(asyncio.Transport):
    """Records what is written; `feed` delivers bytes to the protocol."""

    def __init__(
        self, protocol: asyncio.Protocol | None = None, peer: tuple[str, int] = ("127.0.0.1", 40000)
    ) -> None:
        super().__init__()
        self.protocol = protocol
        self.peer = peer
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading = True
        self._lost = False

    def attach(self, protocol: asyncio.Protocol) -> MemoryTransport:
        """Connects `protocol` to this transport (its `connection_made`)."""
        self.protocol = protocol
        protocol.connection_made(self)
        return self

    def feed(self, data: bytes) -> None:
        assert self.protocol is not None and not self.closed
        self.protocol.data_received(data)

    def take(self) -> bytes:
        """Returns what was written since the last call."""
        data = b"".join(self.written)
        self.written.clear()
        return data

    # -- asyncio.Transport ---------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise RuntimeError("write on a closed transport")
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._schedule_lost()

    def abort(self) -> None:
        self.aborted = True
        self.written.clear()
        self.close()

    def lose(self) -> None:
        """The peer went away: the transport closes and the protocol hears of it."""
        self.close()

    def _schedule_lost(self) -> None:
        if self.protocol is not None and not self._lost:
            self._lost = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.write_limits = (high, low)

    def get_write_buffer_size(self) -> int:
        return 0  # what is written is taken at once

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (0, 0)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[return-value]

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name in ("peername", "sockname"):
            return self.peer
        return default


def pooled_connections(
    pools: UpstreamPools,
    replica: Replica,
    count: int,
    transport: type[MemoryTransport] = MemoryTransport,
) -> list[MemoryTransport]:
    """Opens `count` idle keep-alive connections to `replica` in its pool, in memory, as a
    steady load leaves them; returns their transports (what the replica receives)."""
    pool = pools.by_replica.get(replica) or pools.add(replica)
    loop = asyncio.get_running_loop()
    transports = []
    for _ in range(count):
        conn = UpstreamConnection(pool, loop)
        transports.append(transport().attach(conn))
        pool.adopt(conn)
    return transports
