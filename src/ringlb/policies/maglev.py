"""`maglev`: Maglev hashing (Eisenbud et al., NSDI 2016), a lookup table of prime size M.

Each replica has a permutation of the table's slots, `offset + j * skip (mod M)`, with
`offset = h0(name) mod M` and `skip = h1(name) mod (M - 1) + 1` (M prime, so every skip
visits every slot). Replicas take turns claiming their next unclaimed preferred slot until
the table is full, so each owns M/N slots give or take one: the static spread is as even as
the keys allow. A membership change moves little more than the minimal 1/(N+1) of keys when
M >> N. Weighted fill (as in Envoy): in round t a replica claims a slot only while its
claims stay below t x weight / max weight.
"""

from __future__ import annotations

from collections.abc import Container, Generator, Iterator, Sequence
from itertools import cycle, islice
from typing import TypeVar

from ringlb.model import Replica
from ringlb.policies.base import (
    SLICE_WORK,
    BuildSteps,
    EmptyPicker,
    Layout,
    Picker,
    equal_weights,
    first_allowed,
    run_to_end,
    sampled_layout,
)
from ringlb.policies.hashing import canonical_order, make_hasher
from ringlb.policies.options import PolicyError, integer, is_prime

DEFAULT_TABLE_SIZE = 65537
# A table is filled on the event loop, in slices: about 1 s per million entries here.
MAX_TABLE_SIZE = 1 << 20

Owner = TypeVar("Owner")


class MaglevPicker:
    __slots__ = ("_key", "_replicas", "_size", "table")

    def __init__(self, table: list[Replica], replicas: Sequence[Replica], key) -> None:
        self.table = table
        self._size = len(table)
        self._replicas = tuple(replicas)
        self._key = key

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        if exclude:
            return first_allowed(self.candidates(key), exclude)
        return self.table[self._key(key) % self._size]

    def candidates(self, key: int) -> Iterator[Replica]:
        """Yields the distinct replicas met walking the table from the key's slot, then any
        replica the walk did not meet (in join order)."""
        table, size = self.table, self._size
        start = self._key(key) % size
        seen: set[Replica] = set()
        wanted = len(self._replicas)
        for step in range(size):
            owner = table[(start + step) % size]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == wanted:
                    return
        for replica in self._replicas:
            if replica not in seen:
                yield replica

    def layout(self) -> Layout:
        """Returns the entries each replica owns and a sample of the table."""
        return sampled_layout(self._size, self.table, range(self._size))


class MaglevPolicy:
    name = "maglev"
    keyed = True
    OPTIONS = ("hash", "table_size", "h_coefficients", "phi_coefficients")

    def __init__(
        self,
        *,
        hash: str = "xxhash64",
        table_size: int = DEFAULT_TABLE_SIZE,
        h_coefficients: list[int] | None = None,
        phi_coefficients: list[int] | None = None,
    ) -> None:
        self.hasher = make_hasher(hash, h_coefficients, phi_coefficients, where=self.name)
        self.table_size = integer(self.name, "table_size", table_size, 2, MAX_TABLE_SIZE)
        if not is_prime(self.table_size):
            raise PolicyError(f"maglev: table_size ({table_size}) must be a prime number")
        self.options = {**self.hasher.options(), "table_size": self.table_size}

    def build(self, replicas: Sequence[Replica]) -> Picker:
        return run_to_end(self.build_steps(replicas))

    def build_steps(self, replicas: Sequence[Replica]) -> BuildSteps:
        """Builds the picker in slices (see `ringlb.policies.base.build_in_slices`)."""
        if not replicas:
            return EmptyPicker()
        # The fill order decides contested slots: an order of the membership alone. A table
        # smaller than the replica set cannot give everyone a slot; the first M share it.
        members = canonical_order(replicas, self.hasher)[: self.table_size]
        table = yield from self.fill_steps(members)
        return MaglevPicker(table, replicas, self.hasher.key)

    def fill(self, replicas: Sequence[Replica]) -> list[Replica]:
        """Returns the lookup table: the owning replica of every slot."""
        return run_to_end(self.fill_steps(replicas))

    def fill_steps(self, replicas: Sequence[Replica]) -> Generator[None, None, list[Replica]]:
        """Fills the lookup table in slices; returns it."""
        size, node = self.table_size, self.hasher.node
        offsets = [node(r, 0) % size for r in replicas]
        skips = [node(r, 1) % (size - 1) + 1 for r in replicas]
        if equal_weights(replicas):
            turns: Iterator[int] = cycle(range(len(replicas)))
        else:
            top = max(r.weight for r in replicas)
            turns = _weighted_turns([r.weight / top for r in replicas])
        return (yield from populate_steps(size, offsets, skips, turns, replicas))


def _weighted_turns(shares: list[float]) -> Iterator[int]:
    """Yields replica indexes in fill order: in round t, those with fewer than t x share
    slots so far (Envoy's weighted Maglev)."""
    claimed = [0] * len(shares)
    turn = 0
    while True:
        turn += 1
        for i, share in enumerate(shares):
            if claimed[i] < turn * share:
                claimed[i] += 1
                yield i


def populate(
    size: int,
    offsets: list[int],
    skips: list[int],
    turns: Iterator[int],
    owners: Sequence[Owner],
) -> list[Owner]:
    """Returns Maglev's table, `owners[i]` in each slot replica i claimed (see
    `populate_steps`), built at once."""
    return run_to_end(populate_steps(size, offsets, skips, turns, owners))


def populate_steps(
    size: int,
    offsets: list[int],
    skips: list[int],
    turns: Iterator[int],
    owners: Sequence[Owner],
) -> Generator[None, None, list[Owner]]:
    """Returns Maglev's table, `owners[i]` in each slot replica i claimed: in the order
    `turns` gives, each replica claims the first free slot of its permutation
    `offset + j * skip (mod size)`. Yields after every SLICE_WORK claims (or so much other
    work); the loops between two yields are unchanged, so slicing costs a yield per slice.

    Exactly the paper's loop, done in two phases for speed (pure Python). While the table
    is mostly empty, each replica walks its permutation. Walking gets slow at the end (a
    replica probes 1/(free fraction) slots per claim), so the last M/8N free slots are
    drafted instead: a free slot's place in replica i's permutation is
    `(slot - offset) / skip (mod size)`, and every slot before the replica's position in its
    permutation is taken, so its next claim is simply its best-ranked free slot. Ranking
    costs M/8 operations; the draft skips at most M/8N taken slots per replica.
    """
    count = len(offsets)
    # None marks a free slot; `is not None` is the cheapest test Python has, and the table
    # holds the owners themselves, so no pass is needed to translate it afterwards.
    table: list[Owner | None] = [None] * size
    positions = list(offsets)
    # The table takes exactly `size` claims: their order, drawn up front, turns the loops
    # below into plain for-loops over a list (the fastest loop Python has).
    order: list[int] = []
    while len(order) < size:
        order += islice(turns, min(2 * SLICE_WORK, size - len(order)))
        yield
    # Ranking costs a few operations per (replica, free slot) pair, N F in all; walking the
    # last F slots costs about M ln(F) probes. F = M / 8N measured fastest (N = 3..100).
    walk_until = size - max(1, size // (8 * count))
    # Phase 1: walk. `position` is offset + next * skip (mod size), advanced by one addition.
    # A claim probes about size/free slots, so slices hold fewer claims as the table fills.
    start = 0
    while start < walk_until:
        end = min(walk_until, start + max(16, SLICE_WORK * (size - start) // size))
        for i in order[start:end]:
            slot, skip = positions[i], skips[i]
            while table[slot] is not None:
                slot += skip
                if slot >= size:
                    slot -= size
            table[slot] = owners[i]
            slot += skip
            positions[i] = slot - size if slot >= size else slot
        start = end
        yield
    # Phase 2: draft the free slots by each replica's ranking of them.
    free: list[int] = []
    for start in range(0, size, 8 * SLICE_WORK):
        end = min(size, start + 8 * SLICE_WORK)
        free += [slot for slot in range(start, end) if table[slot] is None]
        yield
    rankings = []
    for i in range(count):
        offset, inverse = offsets[i], pow(skips[i], -1, size)
        # rank * size + slot sorts by rank and keeps the slot: one int per entry.
        ranked = sorted((slot - offset) * inverse % size * size + slot for slot in free)
        rankings.append([entry % size for entry in ranked])
        yield
    cursors = [0] * count
    for start in range(walk_until, size, SLICE_WORK):
        for i in order[start : start + SLICE_WORK]:
            ranking, k = rankings[i], cursors[i]
            while table[ranking[k]] is not None:
                k += 1
            table[ranking[k]] = owners[i]
            cursors[i] = k + 1
        yield
    return table  # type: ignore[return-value]  # every slot is claimed
