"""Swarm test fixtures: a private Docker engine of the test's own, in a network namespace of
its own (tests/private_engine.py), holding the replica image copied from the shared engine.
The shared engine's swarm state is never touched. Where that cannot be had (no root, no
dockerd, no shared engine or image) the tests skip, or fail with RINGLB_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docker"))

from dockertest import engine_problem
from swarmtest import IMAGE

from private_engine import Netns, PrivateEngine


def swarm_problem() -> str | None:
    """Returns why no private swarm engine can be run here, or None."""
    if os.geteuid() != 0:
        return "a private swarm engine needs root"
    for tool in ("dockerd", "docker", "ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"a private swarm engine needs {tool}"
    problem = engine_problem()
    if problem:
        return problem
    import docker

    client = docker.from_env(timeout=30)
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        return f"image {IMAGE} not built (make build)"
    finally:
        client.close()
    return None


def skip_or_fail(problem: str) -> None:
    if os.environ.get("RINGLB_REQUIRE_DOCKER") == "1":
        pytest.fail(f"RINGLB_REQUIRE_DOCKER=1 but {problem}", pytrace=False)
    pytest.skip(problem)


def private_engines(count: int) -> Iterator[list[PrivateEngine]]:
    """Starts `count` engines, each in a network namespace of its own, with the image."""
    problem = swarm_problem()
    if problem:
        skip_or_fail(problem)
    base = 20 + os.getpid() % 200  # 10.214.<index>.0/24 per namespace
    engines = []
    try:
        for i in range(count):
            engine = PrivateEngine(netns=Netns(base + i))
            engines.append(engine)  # before anything is made: the finally undoes it all
            engine.netns.create()
            engine.start()
            engine.copy_image(IMAGE)
        yield engines
    finally:
        for engine in engines:
            engine.destroy()
            engine.netns.destroy()


@pytest.fixture(scope="module")
def swarm_engine() -> Iterator[PrivateEngine]:
    """One private engine (in no swarm yet: `swarm.py up` makes one)."""
    yield from (engines[0] for engines in private_engines(1))
