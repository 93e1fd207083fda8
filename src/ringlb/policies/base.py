"""The policy interface: a policy builds a picker once per membership change.

A `Picker` is immutable routing state (a ring, a table...) over the serving replicas;
the data plane calls `pick` on every request, so it must be fast and never block.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container, Generator, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Protocol, TypeVar

from ringlb.model import Picker, Replica

Built = TypeVar("Built")


class KeyedPicker(Picker, Protocol):
    """A picker that routes by the key alone (a hash policy): it can list, for a key, every
    replica in its preference order, which is what bounded loads walk."""

    def candidates(self, key: int) -> Iterator[Replica]:
        """Yields each replica once, the key's first choice first (the retry order)."""
        ...


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the replicas sit on a ring or table, for metrics and the status page.

    `size` is the number of positions (ring slots or table entries), `owned` the positions
    (virtual nodes or entries) each replica holds, `share` the fraction of the key space
    each one serves (the arcs ending at its positions), and `points` at most LAYOUT_POINTS
    (position, owner) pairs in position order (a sample when there are more). Pickers that
    have a ring or table expose it with a `layout()` method; others have none.
    """

    size: int
    owned: dict[Replica, int]
    share: dict[Replica, float]
    points: list[tuple[int, Replica]]


LAYOUT_POINTS = 720


def sampled_layout(size: int, owners: Sequence[Replica], positions: Sequence[int]) -> Layout:
    """Returns the Layout of `owners[i]` at `positions[i]` (sorted), sampled evenly."""
    arcs: Counter[Replica] = Counter()
    previous = positions[-1] - size  # the first arc wraps around from the last position
    for position, owner in zip(positions, owners, strict=True):
        arcs[owner] += position - previous
        previous = position
    step = max(1, -(-len(owners) // LAYOUT_POINTS))
    points = list(islice(zip(positions, owners, strict=True), 0, None, step))
    share = {owner: arc / size for owner, arc in arcs.items()}
    return Layout(size, dict(Counter(owners)), share, points)


class Policy(Protocol):
    name: str
    keyed: bool  # whether its pickers route on the request key (hash policies)

    def build(self, replicas: Sequence[Replica]) -> Picker:
        """Returns a picker over `replicas`, given in join order."""
        ...


# A build in slices does about this much work between two yields (claims of a Maglev slot,
# ring nodes placed): about a millisecond here, so that the event loop that drives the build
# runs its requests between slices instead of stalling for the whole table (30 to 65 ms for
# Maglev's 65,537 entries).
SLICE_WORK = 2048

# Yields (None) between slices of work; its return value is the picker.
BuildSteps = Generator[None, None, Picker]


def build_in_slices(policy: Policy, replicas: Sequence[Replica]) -> BuildSteps:
    """Builds `policy`'s picker over `replicas`, yielding between slices of SLICE_WORK; returns
    the picker, the same one `policy.build` returns. A policy whose build is cheap (no
    `build_steps` method) builds in one slice."""
    steps = getattr(policy, "build_steps", None)
    if steps is None:
        return policy.build(replicas)
    return (yield from steps(replicas))


# A table built once, used everywhere (issue 14). A policy whose pickers hold a costly
# table (Maglev's: 65,537 entries, 10 ms with the fill compiled) says so (`shares_tables =
# True`); its pickers hand the table over as bytes (`shared_table()`), and it makes the same
# picker from them (`from_shared_table(replicas, table)`) in about 2 ms: the control process
# of `--workers N` builds each table once and its workers take it, instead of each building
# it again on a core that is serving requests.


def shares_tables(policy: Policy) -> bool:
    """Returns whether `policy`'s pickers over a non-empty replica set share their table."""
    return bool(getattr(policy, "shares_tables", False))


def table_to_share(picker: Picker) -> bytes | None:
    """Returns the picker's table as bytes, or None when it has no costly table to share."""
    share = getattr(picker, "shared_table", None)
    return share() if share is not None else None


def picker_from_shared(policy: Policy, replicas: Sequence[Replica], table: bytes) -> Picker | None:
    """Returns the picker `policy` builds over `replicas` (the same replicas in the same order
    as the picker that shared `table`), made from `table`; None if the policy cannot."""
    if not shares_tables(policy):
        return None
    return policy.from_shared_table(replicas, table)  # type: ignore[attr-defined]


def run_to_end(steps: Generator[None, None, Built]) -> Built:
    """Returns the result of a build in slices, run at once (no yield to anyone)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


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
