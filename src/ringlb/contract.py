"""The wire contract, once: envelopes, messages, the hostname rule and payload validation.

Every string a client can see comes from this module, so CONTRACT.md has exactly one
copy in the code. Bodies are compact JSON (`{"a":1}`), because some clients compare the
raw text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

JSON_CONTENT_TYPE = "application/json"
MAX_ADMIN_BODY = 64 * 1024

HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def dumps(obj: Any) -> bytes:
    """Returns `obj` as compact UTF-8 JSON, the only encoding the contract allows."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    # A lone surrogate (a payload may carry "\ud800") has no UTF-8 form; its JSON escape
    # is what backslashreplace writes, so the answer stays valid JSON instead of failing.
    return text.encode("utf-8", "backslashreplace")


def success(payload: Any) -> bytes:
    """Returns the success envelope around `payload`."""
    return dumps({"message": payload, "status": "successful"})


def failure(text: str) -> bytes:
    """Returns the error envelope; `text` is the part after `<Error> `."""
    return dumps({"message": f"<Error> {text}", "status": "failure"})


def replica_list(names: list[str]) -> bytes:
    """Returns the `/rep` answer (also the answer of `/add` and `/rm`)."""
    return success({"N": len(names), "replicas": names})


def is_valid_hostname(name: object) -> bool:
    """Returns whether `name` is a valid replica hostname (a valid Docker container name)."""
    return isinstance(name, str) and HOSTNAME_RE.fullmatch(name) is not None


# -- replica server ---------------------------------------------------------------------


def home_message(server_id: str) -> bytes:
    return success(f"Hello from Server: {server_id}")


def unknown_endpoint(path: str) -> bytes:
    return failure(f"'{path}' endpoint does not exist in server replicas")


# -- balancer errors -------------------------------------------------------------------

NO_REPLICAS = "No replicas available"
INVALID_JSON = "Invalid JSON payload"
BAD_N = "'n' must be a non-negative integer"
BAD_HOSTNAMES = "'hostnames' must be a list of strings"
TOO_MANY_HOSTNAMES_ADD = "Length of hostname list is more than newly added instances"
TOO_MANY_HOSTNAMES_RM = "Length of hostname list is more than removable instances"
URI_TOO_LONG = "Request target too long"
HEADERS_TOO_LARGE = "Request headers too large or too many"


def body_too_large(limit: int) -> str:
    return f"Request body larger than {limit} bytes"


def slow_headers(seconds: float) -> str:
    return f"Request headers not received within {seconds:g} s"


def slow_body(seconds: float) -> str:
    return f"Request body stalled for {seconds:g} s"


def invalid_hostname(name: str) -> str:
    return f"Invalid hostname '{name}'"


def duplicate_hostname(name: str) -> str:
    return f"Duplicate hostname '{name}' in payload"


def hostname_exists(name: str) -> str:
    return f"Hostname '{name}' already exists"


def not_a_replica(name: str) -> str:
    return f"Hostname '{name}' is not a replica"


def cannot_exceed(maximum: int) -> str:
    return f"Cannot exceed {maximum} replicas"


def cannot_remove(n: int, existing: int) -> str:
    return f"Cannot remove {n} replicas, only {existing} exist"


def method_not_allowed(method: str, path: str) -> str:
    return f"Method {method} not allowed on {path}"


UNAUTHORIZED = "Missing or invalid admin token"
TOO_MANY_CONNECTIONS = "Too many connections; retry later"


def overloaded(detail: str) -> str:
    return f"Overloaded: {detail}; retry later"


def not_on_admin_listener(path: str) -> str:
    return f"'{path}' is not an admin endpoint (this listener serves only the admin API)"


def upstream_failed(detail: str) -> str:
    return f"All replicas failed: {detail}"


# Several balancers: a write made on a follower goes to the leader.
NO_LEADER = "No leading balancer answers now; retry later"


def leader_failed(leader: str | None) -> str:
    return f"The leading balancer {leader} did not answer this change; see /rep before retrying"


class ContractError(Exception):
    """A request the contract refuses; carries the HTTP status and the `<Error>` text."""

    def __init__(self, text: str, status: int = 400) -> None:
        super().__init__(text)
        self.text = text
        self.status = status

    def body(self) -> bytes:
        return failure(self.text)


@dataclass(frozen=True, slots=True)
class MembershipRequest:
    """A parsed `/add` or `/rm` payload: how many replicas and which names first."""

    n: int
    hostnames: tuple[str, ...]


def parse_membership_payload(raw: bytes, *, adding: bool) -> MembershipRequest:
    """Returns the validated payload of `/add` (adding=True) or `/rm`.

    Checks only what the payload alone decides (shape, types, names, duplicates, the
    hostname-list length rule); checks against live membership belong to the ReplicaSet.
    An empty body means `{}`.
    """
    if raw.strip():
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ContractError(INVALID_JSON) from None
    else:
        payload = {}
    if not isinstance(payload, dict):
        raise ContractError(INVALID_JSON)

    hostnames = payload.get("hostnames", [])
    if hostnames is None:
        hostnames = []
    if not isinstance(hostnames, list) or not all(isinstance(h, str) for h in hostnames):
        raise ContractError(BAD_HOSTNAMES)

    n = payload.get("n", len(hostnames))
    # bool is an int subclass in Python, but `true` is not a count.
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ContractError(BAD_N)

    if len(hostnames) > n:
        raise ContractError(TOO_MANY_HOSTNAMES_ADD if adding else TOO_MANY_HOSTNAMES_RM)

    seen: set[str] = set()
    for name in hostnames:
        if adding and not is_valid_hostname(name):
            raise ContractError(invalid_hostname(name))
        if name in seen:
            raise ContractError(duplicate_hostname(name))
        seen.add(name)
    return MembershipRequest(n=n, hostnames=tuple(hostnames))


# -- /policy (GET and PUT) -----------------------------------------------------------------

BAD_POLICY_NAME = "'name' must be a string"
BAD_POLICY_OPTIONS = "'options' must be a JSON object"


def policy_too_small(name: str, capacity: int, maximum: int) -> str:
    return f"Policy '{name}' holds at most {capacity} replicas; max_replicas is {maximum}"


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """A parsed `PUT /policy` payload; `name` None means "keep the current policy"."""

    name: str | None
    options: dict[str, Any]


def parse_policy_payload(raw: bytes) -> PolicyRequest:
    """Returns the validated `PUT /policy` payload `{"name": ..., "options": {...}}`.

    Both fields are optional; missing options mean the policy's defaults. Whether the name
    and the options are valid is the policy registry's decision.
    """
    try:
        payload = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise ContractError(INVALID_JSON) from None
    if not isinstance(payload, dict):
        raise ContractError(INVALID_JSON)
    name = payload.get("name")
    if name is not None and not isinstance(name, str):
        raise ContractError(BAD_POLICY_NAME)
    options = payload.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ContractError(BAD_POLICY_OPTIONS)
    return PolicyRequest(name, options)
