"""The balancer's own endpoints: `/rep`, `/add`, `/rm` and `/policy`.

Handlers take the method and the raw body and return a status, a JSON body and extra
headers; the data plane's connection handler does the HTTP. Validation of the payload is
in `contract.py`; checks against live membership are in the ReplicaSet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ringlb import contract
from ringlb.contract import ContractError
from ringlb.policies import PolicyError, capacity_error, describe_policy, make_policy
from ringlb.replicaset import ReplicaSet

log = logging.getLogger("ringlb.admin")


@dataclass(frozen=True, slots=True)
class AdminResponse:
    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[bytes], Awaitable[AdminResponse]]


class AdminAPI:
    """Routes admin requests by exact path; `paths` is what the data plane must not proxy."""

    def __init__(self, replicaset: ReplicaSet) -> None:
        self._replicaset = replicaset
        self._routes: dict[str, dict[str, Handler]] = {
            "/rep": {"GET": self.rep, "HEAD": self.rep},
            "/add": {"POST": self.add},
            "/rm": {"DELETE": self.rm, "POST": self.rm},
            "/policy": {"GET": self.get_policy, "HEAD": self.get_policy, "PUT": self.put_policy},
        }
        self.paths = frozenset(self._routes)

    def accepts_body(self, path: str) -> bool:
        return path in self.paths

    async def handle(self, method: str, path: str, body: bytes) -> AdminResponse:
        """Returns the answer to `method path` with `body`; never raises."""
        methods = self._routes[path]
        handler = methods.get(method)
        if handler is None:
            allow = ", ".join(methods).encode()
            text = contract.method_not_allowed(method, path)
            return AdminResponse(405, contract.failure(text), [(b"Allow", allow)])
        try:
            return await handler(body)
        except ContractError as exc:
            if exc.status >= 500:
                log.error("%s %s failed: %s", method, path, exc.text)
            return AdminResponse(exc.status, exc.body())
        except Exception:
            log.exception("%s %s crashed", method, path)
            return AdminResponse(500, contract.failure("Internal error; see the balancer log"))

    async def rep(self, body: bytes) -> AdminResponse:
        return AdminResponse(200, contract.replica_list(self._replicaset.snapshot.names()))

    async def add(self, body: bytes) -> AdminResponse:
        request = contract.parse_membership_payload(body, adding=True)
        names = await self._replicaset.add(request)
        return AdminResponse(200, contract.replica_list(names))

    async def rm(self, body: bytes) -> AdminResponse:
        request = contract.parse_membership_payload(body, adding=False)
        names = await self._replicaset.remove(request)
        return AdminResponse(200, contract.replica_list(names))

    async def get_policy(self, body: bytes) -> AdminResponse:
        return AdminResponse(200, contract.success(describe_policy(self._replicaset.policy)))

    async def put_policy(self, body: bytes) -> AdminResponse:
        """Switches the policy; the new snapshot serves new requests, none is dropped."""
        request = contract.parse_policy_payload(body)
        name = request.name if request.name is not None else self._replicaset.policy.name
        try:
            policy = make_policy(name, **request.options)
        except PolicyError as exc:
            raise ContractError(str(exc)) from None
        too_small = capacity_error(policy, self._replicaset.max_replicas)
        if too_small is not None:
            raise ContractError(too_small)
        self._replicaset.set_policy(policy)
        log.info("policy switched to %s", describe_policy(policy))
        return AdminResponse(200, contract.success(describe_policy(policy)))
