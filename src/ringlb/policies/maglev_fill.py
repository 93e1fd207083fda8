"""Maglev's table fill: the paper's population loop, a pure function of the replicas'
offsets, skips and turns (`ringlb.policies.maglev` computes those from the membership).

Its own module so that it can be compiled (setup.py: mypyc, from this same source): the fill
is all of the cost of a Maglev build, about 20 ms of plain Python for 65,537 entries and half
that compiled, while the picker and the hashes, called per request, stay plain Python
(compiled, their arbitrary-precision arithmetic was slower).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from itertools import islice

from ringlb.policies.base import SLICE_WORK, run_to_end


def populate(
    size: int,
    offsets: list[int],
    skips: list[int],
    turns: Iterator[int],
) -> list[int]:
    """Returns Maglev's table, the index i of the replica that claimed each slot (see
    `populate_steps`), built at once."""
    return run_to_end(populate_steps(size, offsets, skips, turns))


def populate_steps(
    size: int,
    offsets: list[int],
    skips: list[int],
    turns: Iterator[int],
) -> Generator[None, None, list[int]]:
    """Returns Maglev's table, the index i of the replica that claimed each slot: in the order
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
    # None marks a free slot: `is not None` is the cheapest test Python has.
    table: list[int | None] = [None] * size
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
            table[slot] = i
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
            table[ranking[k]] = i
            cursors[i] = k + 1
        yield
    return table  # type: ignore[return-value]  # every slot is claimed
