"""Balancing policies, registered by name. Add a module and one line in `REGISTRY`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ringlb.policies.assignment import AssignmentPolicy
from ringlb.policies.base import EmptyPicker, Picker, Policy

REGISTRY: dict[str, Callable[..., Policy]] = {
    "assignment": AssignmentPolicy,
}


def make_policy(name: str, **options: Any) -> Policy:
    """Returns the policy registered as `name`, built with `options`."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"policy: unknown policy {name!r} (known: {known})") from None
    return factory(**options)


__all__ = ["REGISTRY", "EmptyPicker", "Picker", "Policy", "make_policy"]
