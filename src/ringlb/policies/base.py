"""The policy interface: a policy builds a picker once per membership change.

A `Picker` is immutable routing state (a ring, a table...) over the serving replicas;
the data plane calls `pick` on every request, so it must be fast and never block.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from typing import Protocol

from ringlb.replica import Replica


class Picker(Protocol):
    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        """Returns the replica for `key`, skipping `exclude` (replicas that already failed
        this request), or None when no replica is left."""
        ...


class KeyedPicker(Picker, Protocol):
    """A picker that routes by the key alone (a hash policy): it can list, for a key, every
    replica in its preference order, which is what bounded loads walk."""

    def candidates(self, key: int) -> Iterator[Replica]:
        """Yields each replica once, the key's first choice first (the retry order)."""
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


def first_allowed(candidates: Iterator[Replica], exclude: Container[Replica]) -> Replica | None:
    """Returns the first candidate not in `exclude`, or None."""
    for replica in candidates:
        if replica not in exclude:
            return replica
    return None


def equal_weights(replicas: Sequence[Replica]) -> bool:
    """Returns whether every replica has the same weight (policies then take a fast path)."""
    return len({r.weight for r in replicas}) <= 1
