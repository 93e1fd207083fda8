"""The policy interface: a policy builds a picker once per membership change.

A `Picker` is immutable routing state (a ring, a table...) over the serving replicas;
the data plane calls `pick` on every request, so it must be fast and never block.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Protocol

from ringlb.replica import Replica


class Picker(Protocol):
    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        """Returns the replica for `key`, skipping `exclude` (replicas that already failed
        this request), or None when no replica is left."""
        ...


class Policy(Protocol):
    name: str

    def build(self, replicas: Sequence[Replica]) -> Picker:
        """Returns a picker over `replicas`, given in join order."""
        ...


class EmptyPicker:
    """The picker of an empty replica set."""

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        return None
