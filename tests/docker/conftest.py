"""Docker test fixtures. Without a reachable engine the docker tests skip with a one-line
reason, unless RINGLB_REQUIRE_DOCKER=1 (set by `make test` in CI): then they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from dockertest import engine_problem


@pytest.fixture(scope="session")
def docker_client() -> Iterator:
    """The Docker SDK client; skips (or fails, with RINGLB_REQUIRE_DOCKER=1) without engine."""
    problem = engine_problem()
    if problem:
        if os.environ.get("RINGLB_REQUIRE_DOCKER") == "1":
            pytest.fail(f"RINGLB_REQUIRE_DOCKER=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    import docker

    client = docker.from_env(timeout=30)
    yield client
    client.close()
