"""The contract's table of cases (`ringlb.analysis.endpoints.CASES`, the only list of
them) run against a balancer on a port, for the process, Docker and Swarm tests alike.

The table leaves the replica set as it found it. Its expected strings come from
`ringlb.contract`; tests/unit/test_contract_strings.py pins those to CONTRACT.md's text.
"""

from __future__ import annotations

import asyncio
import re

from ringlb.analysis import endpoints
from ringlb.analysis.client import LoadClient
from ringlb.contract import failure

HOME_RE = re.compile(
    rb'^\{"message":"Hello from Server: ([A-Za-z0-9][A-Za-z0-9_.-]*)",'
    rb'"status":"successful"\}$'
)


def error_body(text: str) -> bytes:
    return failure(text)


def contract_failures(port: int, host: str = "127.0.0.1") -> list[endpoints.Check]:
    """Runs every case against the balancer; returns the rows that did not pass."""

    async def run() -> list[endpoints.Check]:
        async with LoadClient(f"http://{host}:{port}", concurrency=4) as client:
            return await endpoints.run(client)

    return [row for row in asyncio.run(run()) if not row.passed]


def run_contract_checks(port: int, host: str = "127.0.0.1") -> None:
    """Raises, naming every failed case, unless the balancer on `port` passes them all."""
    failed = contract_failures(port, host)
    assert not failed, "\n".join(
        f"{r.case}: {r.request} -> {r.status} {r.body}; expected {r.expected}" for r in failed
    )
