"""What the balancer knows about one replica: its name, its ring id and where it listens."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class Replica:
    """One replica. Identity is the object (names can be reused after `/rm`).

    `rid` is the integer id the assignment ring hashes (from a counter starting at 1, never
    reused). `inflight` is the number of requests the proxy has open on it; it is the only
    field that changes after creation, and only the data plane writes it.
    """

    name: str
    rid: int
    host: str
    port: int
    weight: float = 1.0
    inflight: int = field(default=0, compare=False)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __repr__(self) -> str:
        return f"Replica({self.name!r}, rid={self.rid}, {self.host}:{self.port})"
