"""The autoscaler's decision rule: band, cooldowns, bounds, one step down at a time."""

from __future__ import annotations

import pytest

from ringlb.control.autoscaler import ScalingRules, decide

RULES = ScalingRules(
    min_replicas=1, max_replicas=6, target_inflight=4, tolerance=0.25, up_cooldown=10,
    down_cooldown=30, window=5,
)  # fmt: skip


@pytest.mark.parametrize(
    ("load", "serving", "since", "delta"),
    [
        (4.0, 3, 100, 0),  # on target
        (4.9, 3, 100, 0),  # inside the band (<= 5)
        (3.1, 3, 100, 0),  # inside the band (>= 3)
        (8.0, 2, 100, 2),  # twice the target: twice the replicas
        (40.0, 2, 100, 4),  # capped at max_replicas
        (8.0, 6, 100, 0),  # already at max
        (8.0, 2, 5, 0),  # up cooldown not over
        (1.0, 4, 100, -1),  # low: one step down
        (1.0, 4, 20, 0),  # down cooldown not over
        (0.0, 1, 100, 0),  # already at min
        (2.9, 2, 100, 0),  # removing one would give 5.8 > 5: would flap, so stay
        (0.0, 0, 0, 1),  # below min (all removed): back to min at once
    ],
)
def test_decide(load: float, serving: int, since: float, delta: int) -> None:
    assert decide(RULES, load, serving, since) == delta
