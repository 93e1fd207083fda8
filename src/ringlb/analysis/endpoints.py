"""A-3, part 1: every endpoint and every error case of CONTRACT.md, as a pass/fail table.

Expected bodies come from `ringlb.contract`, the one copy of the contract's strings, and
are compared byte for byte. The checks change membership (they add, remove, and empty the
set once to see the 503) and restore the replica names they found at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from ringlb import contract
from ringlb.analysis.client import LoadClient, Reply

PROBE_NAME = "a3_probe"


@dataclass(frozen=True)
class Check:
    """One row of the table: what was sent, what the contract says, what came back."""

    case: str
    request: str
    expected: str
    status: int
    body: str
    passed: bool

    def as_dict(self) -> dict[str, object]:
        return self.__dict__.copy()


def _body(obj: object) -> bytes:
    return obj if isinstance(obj, bytes) else json.dumps(obj).encode()


class EndpointChecks:
    def __init__(self, client: LoadClient) -> None:
        self.client = client
        self.rows: list[Check] = []

    async def expect(
        self,
        case: str,
        method: str,
        path: str,
        payload: object = None,
        *,
        status: int,
        body: bytes | None = None,
        test: Callable[[Reply], bool] | None = None,
        describe: str = "",
    ) -> Reply:
        """Sends one request and records whether status and body are what the contract says."""
        data = None if payload is None else _body(payload)
        reply = await self.client.call(method, path, data)
        passed = reply.status == status
        if body is not None:
            passed = passed and reply.body == body
        if test is not None:
            passed = passed and test(reply)
        shown = data.decode(errors="replace") if data is not None else ""
        if len(shown) > 60:
            shown = shown[:40] + f"... ({len(data)} bytes)"
        expected = f"{status} " + (body.decode() if body is not None else describe)
        self.rows.append(
            Check(
                case,
                f"{method} {path} {shown}".strip(),
                expected,
                reply.status,
                reply.body.decode(errors="replace")[:160],
                passed,
            )
        )
        return reply

    async def run(self) -> list[Check]:
        """Returns the table; the replica names found at the start are serving at the end."""
        c, fail = self, contract.failure
        original = await self.client.replicas()
        await c.expect(
            "list replicas", "GET", "/rep", status=200, body=contract.replica_list(original)
        )
        await c.expect(
            "proxy /home to a replica",
            "GET",
            "/home",
            status=200,
            test=lambda r: (
                r.json()["message"].split()[-1] in original and r.json()["message"].count(":") == 1
            ),
            describe='{"message":"Hello from Server: <one of /rep>","status":"successful"}',
        )
        await c.expect("proxy /heartbeat", "GET", "/heartbeat", status=200, describe="(empty)")
        await c.expect(
            "unknown path", "GET", "/other", status=400, body=contract.unknown_endpoint("/other")
        )
        await c.expect(
            "unknown path, query dropped",
            "GET",
            "/other?x=1",
            status=400,
            body=contract.unknown_endpoint("/other"),
        )
        await c.expect(
            "GET / is proxied", "GET", "/", status=400, body=contract.unknown_endpoint("/")
        )

        # /add: success, then each error case in the contract's order.
        await c.expect(
            "add one named replica",
            "POST",
            "/add",
            {"n": 1, "hostnames": [PROBE_NAME]},
            status=200,
            body=contract.replica_list([*original, PROBE_NAME]),
        )
        bad = fail
        await c.expect(
            "add: more hostnames than n",
            "POST",
            "/add",
            {"n": 1, "hostnames": ["x1", "x2"]},
            status=400,
            body=bad(contract.TOO_MANY_HOSTNAMES_ADD),
        )
        await c.expect(
            "add: not JSON", "POST", "/add", b"{n:", status=400, body=bad(contract.INVALID_JSON)
        )
        await c.expect(
            "add: not an object", "POST", "/add", [1], status=400, body=bad(contract.INVALID_JSON)
        )
        for n in ("2", -1, True):
            await c.expect(
                f"add: n = {json.dumps(n)}",
                "POST",
                "/add",
                {"n": n},
                status=400,
                body=bad(contract.BAD_N),
            )
        for hostnames in ("server_9", [1]):
            await c.expect(
                f"add: hostnames = {json.dumps(hostnames)}",
                "POST",
                "/add",
                {"n": 1, "hostnames": hostnames},
                status=400,
                body=bad(contract.BAD_HOSTNAMES),
            )
        await c.expect(
            "add: invalid hostname",
            "POST",
            "/add",
            {"n": 1, "hostnames": ["-bad"]},
            status=400,
            body=bad(contract.invalid_hostname("-bad")),
        )
        await c.expect(
            "add: duplicate hostname",
            "POST",
            "/add",
            {"n": 2, "hostnames": ["dup", "dup"]},
            status=400,
            body=bad(contract.duplicate_hostname("dup")),
        )
        await c.expect(
            "add: hostname in use",
            "POST",
            "/add",
            {"n": 1, "hostnames": [PROBE_NAME]},
            status=400,
            body=bad(contract.hostname_exists(PROBE_NAME)),
        )
        await c.expect(
            "add: above max replicas",
            "POST",
            "/add",
            {"n": 100000},
            status=400,
            test=lambda r: r.json()["message"].startswith("<Error> Cannot exceed "),
            describe='{"message":"<Error> Cannot exceed <max> replicas","status":"failure"}',
        )
        huge = json.dumps({"n": 0, "hostnames": [], "pad": "x" * (contract.MAX_ADMIN_BODY + 1)})
        await c.expect(
            "add: body over 64 KiB",
            "POST",
            "/add",
            huge.encode(),
            status=413,
            test=lambda r: r.json()["status"] == "failure",
            describe="JSON error envelope",
        )

        # /rm: success (DELETE and POST), then each error case.
        await c.expect(
            "rm one named replica (DELETE)",
            "DELETE",
            "/rm",
            {"n": 1, "hostnames": [PROBE_NAME]},
            status=200,
            body=contract.replica_list(original),
        )
        await self.client.change("/add", 1, [PROBE_NAME])
        await c.expect(
            "rm one named replica (POST)",
            "POST",
            "/rm",
            {"n": 1, "hostnames": [PROBE_NAME]},
            status=200,
            body=contract.replica_list(original),
        )
        await c.expect(
            "rm: more hostnames than n",
            "DELETE",
            "/rm",
            {"n": 0, "hostnames": [original[0]]},
            status=400,
            body=bad(contract.TOO_MANY_HOSTNAMES_RM),
        )
        too_many = len(original) + 1
        await c.expect(
            "rm: n above N",
            "DELETE",
            "/rm",
            {"n": too_many},
            status=400,
            body=bad(contract.cannot_remove(too_many, len(original))),
        )
        await c.expect(
            "rm: not a replica",
            "DELETE",
            "/rm",
            {"n": 1, "hostnames": ["nosuch"]},
            status=400,
            body=bad(contract.not_a_replica("nosuch")),
        )
        await c.expect(
            "rm: not JSON", "DELETE", "/rm", b"[", status=400, body=bad(contract.INVALID_JSON)
        )

        # Methods.
        for method, path, allow in (
            ("PUT", "/rep", "GET"),
            ("GET", "/add", "POST"),
            ("GET", "/rm", "DELETE"),
        ):
            await c.expect(
                f"wrong method on {path}",
                method,
                path,
                status=405,
                body=bad(contract.method_not_allowed(method, path)),
                test=lambda r, allow=allow: allow in r.headers.get("Allow", ""),
            )

        # No replica at all: 503, then everything back.
        await c.expect(
            "rm every replica",
            "DELETE",
            "/rm",
            {"n": len(original)},
            status=200,
            body=contract.replica_list([]),
        )
        await c.expect(
            "no replica: 503", "GET", "/home", status=503, body=bad(contract.NO_REPLICAS)
        )
        await c.expect(
            "add the replicas back",
            "POST",
            "/add",
            {"n": len(original), "hostnames": original},
            status=200,
            body=contract.replica_list(original),
        )
        return self.rows


async def run(client: LoadClient) -> list[Check]:
    return await EndpointChecks(client).run()
