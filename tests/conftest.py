from __future__ import annotations

from collections.abc import Iterator

import pytest

from lbtest import BalancerProcess


@pytest.fixture
def start_balancer() -> Iterator:
    """Returns a function starting `ringlb serve` with extra flags; all are cleaned up."""
    started: list[BalancerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> BalancerProcess:
        balancer = BalancerProcess(*args, env=env)
        started.append(balancer)
        return balancer.start()

    yield start
    for balancer in started:
        balancer.cleanup()


@pytest.fixture
def balancer(start_balancer) -> BalancerProcess:
    """A fresh balancer with the default three replicas and a fixed seed."""
    return start_balancer("--seed", "7")
