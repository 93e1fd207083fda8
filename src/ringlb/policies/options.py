"""Validation of policy options: one rule each, messages name the policy and the option.

Messages read like `ring: vnodes (0) must be >= 1`, the form DESIGN.md asks for; the admin
API and the settings pass them to the user unchanged.
"""

from __future__ import annotations

import math

DEFAULT_LOAD_FACTOR = 1.25


class PolicyError(ValueError):
    """A bad policy name or option; the message names the policy and the option."""


def integer(
    policy: str, option: str, value: object, minimum: int, maximum: int | None = None
) -> int:
    """Returns `value` if it is an int in [minimum, maximum], else raises PolicyError.

    Sizes need a maximum: tables are built on the event loop, so an enormous one would
    stall the data plane (found by fuzzing PUT /policy)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{policy}: {option} ({value!r}) must be an integer")
    if value < minimum:
        raise PolicyError(f"{policy}: {option} ({value}) must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise PolicyError(f"{policy}: {option} ({value}) must be <= {maximum}")
    return value


def number(policy: str, option: str, value: object, minimum: float) -> float:
    """Returns `value` as a float if it is a finite number >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyError(f"{policy}: {option} ({value!r}) must be a number")
    if value < minimum:
        raise PolicyError(f"{policy}: {option} ({value}) must be >= {minimum:g}")
    return float(value)


def boolean(policy: str, option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{policy}: {option} ({value!r}) must be true or false")
    return value


def optional_seed(policy: str, value: object) -> int | None:
    """Returns the `seed` option: None (seeded from the OS) or an integer."""
    if value is None:
        return None
    return integer(policy, "seed", value, 0)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True
