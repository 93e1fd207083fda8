"""The request access log: one line per answered request, for a sampled fraction of them.

Off by default. When off the proxy holds None instead of an AccessLog, so the request path
pays a single attribute check; when on, each answer costs one random draw, and a logging
call for the sampled ones.
"""

from __future__ import annotations

import logging
import random

from ringlb.dataplane.request import Request
from ringlb.model import Replica

log = logging.getLogger("ringlb.access")


class AccessLog:
    """Logs `fraction` (0 < fraction <= 1) of the answers to the `ringlb.access` logger,
    with the fields as structured extras (method, path, status, replica, duration_ms,
    client)."""

    def __init__(self, fraction: float, rng: random.Random | None = None) -> None:
        self.fraction = fraction
        self._random = (rng or random.Random()).random

    def record(
        self,
        request: Request,
        replica: Replica,
        status: int,
        seconds: float,
        peer: bytes,
    ) -> None:
        if self.fraction < 1.0 and self._random() >= self.fraction:
            return
        target = request.target.decode("latin-1")
        ms = round(seconds * 1000, 3)
        log.info(
            "%s %s %d %s %.3f ms",
            request.method,
            target,
            status,
            replica.name,
            ms,
            extra={
                "method": request.method,
                "path": target,
                "status": status,
                "replica": replica.name,
                "duration_ms": ms,
                "client": peer.decode("latin-1"),
            },
        )
