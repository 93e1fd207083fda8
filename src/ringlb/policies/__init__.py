"""Balancing policies, registered by name. Add a module and one line in `REGISTRY`.

`make_policy` validates the options (messages name the policy and the option) and wraps a
hash policy in bounded loads when `bounded` is true.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ringlb.contract import policy_too_small
from ringlb.policies.assignment import AssignmentPolicy
from ringlb.policies.base import EmptyPicker, Picker, Policy
from ringlb.policies.bounded import BoundedPolicy
from ringlb.policies.least_connections import LeastConnectionsPolicy
from ringlb.policies.maglev import MaglevPolicy
from ringlb.policies.options import DEFAULT_LOAD_FACTOR, PolicyError, boolean, number
from ringlb.policies.p2c import TwoChoicesPolicy
from ringlb.policies.random_choice import RandomPolicy
from ringlb.policies.rendezvous import RendezvousPolicy
from ringlb.policies.ring_hash import RingHashPolicy
from ringlb.policies.round_robin import RoundRobinPolicy

REGISTRY: dict[str, Callable[..., Policy]] = {
    "assignment": AssignmentPolicy,
    "ring": RingHashPolicy,
    "maglev": MaglevPolicy,
    "rendezvous": RendezvousPolicy,
    "round_robin": RoundRobinPolicy,
    "least_connections": LeastConnectionsPolicy,
    "p2c": TwoChoicesPolicy,
    "random": RandomPolicy,
}

BOUNDED_OPTIONS = ("bounded", "load_factor")


def option_names(name: str) -> tuple[str, ...]:
    """Returns the options the policy `name` accepts (bounded loads for hash policies)."""
    factory = REGISTRY[name]
    extra = BOUNDED_OPTIONS if getattr(factory, "keyed", False) else ()
    return (*getattr(factory, "OPTIONS", ()), *extra)


def capacity_error(policy: Policy, max_replicas: int) -> str | None:
    """Returns why `policy` cannot hold `max_replicas` replicas, or None when it can."""
    capacity = getattr(policy, "capacity", None)
    if capacity is not None and capacity < max_replicas:
        return policy_too_small(policy.name, capacity, max_replicas)
    return None


def make_policy(name: str, **options: Any) -> Policy:
    """Returns the policy registered as `name`, built with `options`.

    Raises PolicyError (a ValueError) naming the policy and the option at fault.
    """
    if name not in REGISTRY:
        known = ", ".join(REGISTRY)
        raise PolicyError(f"policy: unknown policy {name!r} (known: {known})")
    known_options = option_names(name)
    for option in options:
        if option not in known_options:
            listed = ", ".join(known_options) or "none"
            raise PolicyError(f"{name}: unknown option {option!r} (known: {listed})")
    bounded = boolean(name, "bounded", options.pop("bounded", False))
    # The default load factor is accepted unbounded: GET /policy shows it, and what GET
    # shows may be PUT back (or published to other balancers) as it is.
    if options.get("load_factor", DEFAULT_LOAD_FACTOR) != DEFAULT_LOAD_FACTOR and not bounded:
        raise PolicyError(f"{name}: load_factor needs bounded true")
    load_factor = number(name, "load_factor", options.pop("load_factor", DEFAULT_LOAD_FACTOR), 1)
    try:
        policy = REGISTRY[name](**options)
    except PolicyError:
        raise
    except ValueError as exc:  # hashing.make_hasher's messages already name the option
        raise PolicyError(str(exc)) from None
    return BoundedPolicy(policy, load_factor) if bounded else policy


def describe_policy(policy: Policy) -> dict[str, Any]:
    """Returns `{"name": ..., "options": {...}}` with every effective option of `policy`."""
    options = dict(getattr(policy, "options", {}))
    if getattr(policy, "keyed", False):
        options.setdefault("bounded", False)
        options.setdefault("load_factor", DEFAULT_LOAD_FACTOR)
    return {"name": policy.name, "options": options}


__all__ = [
    "REGISTRY",
    "EmptyPicker",
    "Picker",
    "Policy",
    "PolicyError",
    "describe_policy",
    "make_policy",
    "option_names",
]
