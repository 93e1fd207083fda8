"""The balancer's own endpoints: `/rep`, `/add`, `/rm` and `/policy`.

Handlers take the method and the raw body and return a status, a JSON body and extra
headers; the data plane's connection handler does the HTTP. Validation of the payload is
in `contract.py`; checks against live membership are in the ReplicaSet.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from ringlb import contract
from ringlb.contract import ContractError
from ringlb.control.membership import ReplicaSet
from ringlb.dataplane.routing import LocalAnswer
from ringlb.policies import PolicyError, capacity_error, describe_policy, make_policy

log = logging.getLogger("ringlb.admin")


Handler = Callable[[bytes], Awaitable[LocalAnswer]]
# Hands a write (method, path, body, authorization) to the leading balancer and returns its
# answer, or None when this balancer leads (`ringlb.control.cluster`).
Relay = Callable[[str, str, bytes, bytes | None], Awaitable[LocalAnswer | None]]
READS = ("GET", "HEAD")  # every other method changes state: it needs the token, and a
# follower relays it to the leader


class AdminAPI:
    """Routes admin requests by exact path; `paths` is what the data plane must not proxy."""

    def __init__(self, replicaset: ReplicaSet, token: str | None, protect_reads: bool) -> None:
        self._replicaset = replicaset
        # With a token, every state-changing request (and, if asked, every read) must carry
        # `Authorization: Bearer <token>`: whoever can call /add and /rm can start and stop
        # containers, and the Docker socket is root on the host.
        self._token = f"Bearer {token}".encode() if token else None
        self._protect_reads = protect_reads
        self._routes: dict[str, dict[str, Handler]] = {
            "/rep": {"GET": self.rep, "HEAD": self.rep},
            "/add": {"POST": self.add},
            "/rm": {"DELETE": self.rm, "POST": self.rm},
            "/policy": {"GET": self.get_policy, "HEAD": self.get_policy, "PUT": self.put_policy},
        }
        self.paths = frozenset(self._routes)
        self.relay: Relay | None = None  # set when several balancers share the membership

    def mount(self, routes: dict[str, dict[str, Handler]]) -> None:
        """Adds routes (call before serving: connections copy `paths` when they open)."""
        self._routes.update(routes)
        self.paths = frozenset(self._routes)

    def accepts_body(self, path: str) -> bool:
        return path in self.paths

    async def handle(
        self, method: str, path: str, body: bytes, authorization: bytes | None = None
    ) -> LocalAnswer:
        """Returns the answer to `method path` with `body`; never raises."""
        methods = self._routes[path]
        handler = methods.get(method)
        if handler is None:
            allow = ", ".join(methods).encode()
            text = contract.method_not_allowed(method, path)
            return LocalAnswer(405, contract.failure(text), [(b"Allow", allow)])
        if not self._authorized(method, authorization):
            challenge = [(b"WWW-Authenticate", b'Bearer realm="ringlb"')]
            return LocalAnswer(401, contract.failure(contract.UNAUTHORIZED), challenge)
        try:
            if self.relay is not None and method not in READS:
                relayed = await self.relay(method, path, body, authorization)
                if relayed is not None:
                    return relayed
            return await handler(body)
        except ContractError as exc:
            if exc.status >= 500:
                log.error("%s %s failed: %s", method, path, exc.text)
            return LocalAnswer(exc.status, exc.body())
        except Exception:
            log.exception("%s %s crashed", method, path)
            return LocalAnswer(500, contract.failure("Internal error; see the balancer log"))

    def _authorized(self, method: str, authorization: bytes | None) -> bool:
        if self._token is None or (method in READS and not self._protect_reads):
            return True
        # Constant time: the comparison must not tell how much of a guess was right.
        return hmac.compare_digest(authorization or b"", self._token)

    async def rep(self, body: bytes) -> LocalAnswer:
        return LocalAnswer(200, contract.replica_list(self._replicaset.snapshot.names()))

    async def add(self, body: bytes) -> LocalAnswer:
        request = contract.parse_membership_payload(body, adding=True)
        names = await self._replicaset.add(request)
        return LocalAnswer(200, contract.replica_list(names))

    async def rm(self, body: bytes) -> LocalAnswer:
        request = contract.parse_membership_payload(body, adding=False)
        names = await self._replicaset.remove(request)
        return LocalAnswer(200, contract.replica_list(names))

    async def get_policy(self, body: bytes) -> LocalAnswer:
        return LocalAnswer(200, contract.success(describe_policy(self._replicaset.policy)))

    async def put_policy(self, body: bytes) -> LocalAnswer:
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
        await self._replicaset.settled()  # the answer means new requests use the policy
        log.info("policy switched to %s", describe_policy(policy))
        return LocalAnswer(200, contract.success(describe_policy(policy)))
