"""Placement of new replica services: the configured constraints, and nodes that seem gone
avoided for a while, never all of them."""

from __future__ import annotations

from ringlb.runtimes.placement import Placement


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_configured_constraints_come_first_and_alone_when_nothing_is_avoided() -> None:
    placement = Placement(["node.role==worker"], avoid_seconds=60, clock=Clock())
    assert placement.constraints(["a", "b"]) == ["node.role==worker"]


def test_an_avoided_node_is_excluded_while_another_ready_node_is_left() -> None:
    placement = Placement(["node.labels.zone==x"], avoid_seconds=60, clock=Clock())
    placement.avoid("b")
    assert placement.constraints(["a", "b", "c"]) == ["node.labels.zone==x", "node.id!=b"]


def test_the_last_ready_node_is_never_avoided() -> None:
    placement = Placement([], avoid_seconds=60, clock=Clock())
    placement.avoid("a")
    assert placement.constraints(["a"]) == []
    placement.avoid("b")
    assert placement.constraints(["a", "b"]) == []


def test_a_node_that_is_not_ready_needs_no_constraint() -> None:
    placement = Placement([], avoid_seconds=60, clock=Clock())
    placement.avoid("gone")  # the managers know it is down: the scheduler avoids it
    assert placement.constraints(["a", "b"]) == []


def test_avoidance_ends_after_its_period() -> None:
    clock = Clock()
    placement = Placement([], avoid_seconds=60, clock=clock)
    placement.avoid("b")
    clock.now += 59.9
    assert placement.constraints(["a", "b"]) == ["node.id!=b"]
    clock.now += 0.2
    assert placement.constraints(["a", "b"]) == []
