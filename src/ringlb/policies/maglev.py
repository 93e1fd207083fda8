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

from array import array
from collections.abc import Container, Generator, Iterator, Sequence
from itertools import cycle

from ringlb.model import Replica
from ringlb.policies.base import (
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
from ringlb.policies.maglev_fill import populate_steps
from ringlb.policies.options import PolicyError, integer, is_prime

DEFAULT_TABLE_SIZE = 65537
# A table is filled on the event loop, in slices: about 1 s per million entries here.
MAX_TABLE_SIZE = 1 << 20


class MaglevPicker:
    """`table[slot]` is the index of the slot's owner in `owners` (the canonical order), one
    byte an entry up to 256 replicas: 64 KiB instead of 512 KiB of references, and it
    crosses to the workers of `--workers N` as it is (`shared_table`)."""

    __slots__ = ("_key", "_owners", "_replicas", "_size", "table")

    def __init__(
        self, table: bytes | array, owners: Sequence[Replica], replicas: Sequence[Replica], key
    ) -> None:
        self.table = table
        self._size = len(table)
        self._owners = tuple(owners)
        self._replicas = tuple(replicas)
        self._key = key

    def pick(self, key: int, exclude: Container[Replica] = ()) -> Replica | None:
        if exclude:
            return first_allowed(self.candidates(key), exclude)
        return self._owners[self.table[self._key(key) % self._size]]

    def candidates(self, key: int) -> Iterator[Replica]:
        """Yields the distinct replicas met walking the table from the key's slot, then any
        replica the walk did not meet (in join order)."""
        table, size, owners = self.table, self._size, self._owners
        start = self._key(key) % size
        seen: set[Replica] = set()
        wanted = len(self._replicas)
        for step in range(size):
            owner = owners[table[(start + step) % size]]
            if owner not in seen:
                seen.add(owner)
                yield owner
                if len(seen) == wanted:
                    return
        for replica in self._replicas:
            if replica not in seen:
                yield replica

    def owners(self) -> list[Replica]:
        """Returns the owner of every entry of the table."""
        return [self._owners[i] for i in self.table]

    def layout(self) -> Layout:
        """Returns the entries each replica owns and a sample of the table."""
        return sampled_layout(self._size, self.owners(), range(self._size))

    def shared_table(self) -> bytes:
        """Returns the table's bytes (see `MaglevPolicy.from_shared_table`)."""
        return bytes(self.table)


class MaglevPolicy:
    name = "maglev"
    keyed = True
    shares_tables = True  # see ringlb.policies.base.table_to_share
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
        members = self._members(replicas)
        indexes = yield from self.fill_steps(members)
        return MaglevPicker(_packed(indexes, len(members)), members, replicas, self.hasher.key)

    def _members(self, replicas: Sequence[Replica]) -> list[Replica]:
        """Returns the replicas in fill order. The fill order decides contested slots: an
        order of the membership alone. A table smaller than the replica set cannot give
        everyone a slot; the first M share it."""
        return canonical_order(replicas, self.hasher)[: self.table_size]

    def from_shared_table(self, replicas: Sequence[Replica], table: bytes) -> MaglevPicker:
        """Returns the picker `build(replicas)` returns, from the `shared_table()` of a picker
        built over the same replicas in the same order; raises ValueError for a table that
        cannot be one (a wrong table would misroute silently)."""
        members = self._members(replicas)
        code = _index_type(len(members))
        indexes = table if code == "B" else array(code, table)
        if not members or len(indexes) != self.table_size or max(indexes) >= len(members):
            raise ValueError(
                f"maglev: a shared table of {len(indexes)} entries does not fit a table of "
                f"{self.table_size} over {len(members)} replicas"
            )
        return MaglevPicker(indexes, members, replicas, self.hasher.key)

    def fill_steps(self, replicas: Sequence[Replica]) -> Generator[None, None, list[int]]:
        """Fills the lookup table in slices; returns it: the index in `replicas` of every
        slot's owner."""
        size, node = self.table_size, self.hasher.node
        offsets = [node(r, 0) % size for r in replicas]
        skips = distinct_skips([node(r, 1) % (size - 1) + 1 for r in replicas], size)
        if equal_weights(replicas):
            turns: Iterator[int] = cycle(range(len(replicas)))
        else:
            top = max(r.weight for r in replicas)
            turns = _weighted_turns([r.weight / top for r in replicas])
        return (yield from populate_steps(size, offsets, skips, turns))


def _index_type(count: int) -> str:
    """Returns the array type code of the narrowest unsigned type that holds 0..count-1."""
    return "B" if count <= 1 << 8 else "H" if count <= 1 << 16 else "I"


def _packed(indexes: list[int], count: int) -> bytes | array:
    """Returns `indexes` (each below `count`) packed: bytes up to 256, else an array."""
    code = _index_type(count)
    return bytes(indexes) if code == "B" else array(code, indexes)


def distinct_skips(skips: list[int], size: int) -> list[int]:
    """Returns the skips with each one that repeats an earlier one moved to the next unused
    value. Two replicas with the same skip walk shifted copies of one permutation and
    contend for the same slots, so a change of membership moves far more keys than
    Maglev's usual few percent (3 replicas, table 5003: 48 % of the keys that should
    stay). The order is the canonical one, so the result is still a function of the
    membership."""
    seen: set[int] = set()
    distinct = []
    for skip in skips:
        while skip in seen:
            skip = skip % (size - 1) + 1  # stays in 1..size-1: a generator of Z_size
        seen.add(skip)
        distinct.append(skip)
    return distinct


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
