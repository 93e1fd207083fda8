"""Swarm test fixtures: a private Docker engine of the test's own, in a network namespace of
its own (tests/private_engine.py), holding the replica image copied from the shared engine.
The shared engine's swarm state is never touched. Where that cannot be had (no root, no
dockerd, no shared engine or image) the tests skip, or fail with RINGLB_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/docker's helpers (dockertest), importable when tests/swarm runs alone.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docker"))

from swarmtest import private_engines

from private_engine import PrivateEngine


@pytest.fixture(scope="module")
def swarm_engine() -> Iterator[PrivateEngine]:
    """One private engine (in no swarm yet: `swarm.py up` makes one)."""
    yield from (engines[0] for engines in private_engines(1))
