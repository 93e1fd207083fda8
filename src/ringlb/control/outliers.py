"""Passive outlier ejection, as Envoy's outlier detection: the rules, and what they decide.

A replica answering `consecutive_errors` 5xx in a row leaves the ring for
`ejection_time x 2^(n-1)` seconds on its n-th ejection; after `max_ejections` it is
reported dead and replaced instead. The last serving replica is never ejected: a
struggling replica is better than none. (The ReplicaSet applies these decisions.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OutlierRules:
    consecutive_errors: int  # 0: off
    ejection_time: float
    max_ejections: int

    def is_outlier(self, errors_in_row: int) -> bool:
        """Returns whether that many 5xx in a row make a replica an outlier."""
        return 0 < self.consecutive_errors <= errors_in_row

    def ejection_seconds(self, ejection: int) -> float | None:
        """Returns how long the `ejection`-th ejection (from 1) lasts, or None when the
        replica has been ejected too often and is to be replaced."""
        if ejection > self.max_ejections:
            return None
        return self.ejection_time * 2 ** (ejection - 1)
