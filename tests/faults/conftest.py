"""Fault-injection fixtures. The Docker faults reuse tests/docker's engine check and
cleanup by label, and skip (or fail, with RINGLB_REQUIRE_DOCKER=1) the same way."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/docker's helpers are imported by module name there (pytest puts that folder on the
# path only when it collects it): make them importable when tests/faults runs alone.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docker"))

from dockertest import engine_problem, remove_owned

IMAGE = "ringlb:latest"


@pytest.fixture(scope="session")
def docker_client() -> Iterator:
    """The Docker SDK client with the replica image present; skips (or fails) otherwise."""
    problem = engine_problem()
    if problem is None:
        import docker

        client = docker.from_env(timeout=30)
        try:
            client.images.get(IMAGE)
        except docker.errors.ImageNotFound:
            problem = f"image {IMAGE} not built (make build)"
            client.close()
    if problem:
        if os.environ.get("RINGLB_REQUIRE_DOCKER") == "1":
            pytest.fail(f"RINGLB_REQUIRE_DOCKER=1 but {problem}", pytrace=False)
        pytest.skip(problem)
    yield client
    client.close()


@pytest.fixture
def docker_owner(docker_client) -> Iterator[str]:
    """A `ringlb.owner` label of this test's own; its containers and network are removed."""
    owner = f"faults-{os.getpid()}"
    remove_owned(docker_client, owner)
    yield owner
    remove_owned(docker_client, owner)
