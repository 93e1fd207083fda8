"""Every endpoint and every error case of CONTRACT.md, as one table of cases.

This is the only list of the contract's cases: A-3 (`ringlb analyze`) reports it as a
pass/fail table, and the test suite runs the same table against the process runtime and
the Docker and Swarm deployments. Expected bodies come from `ringlb.contract`, the one copy
of the contract's strings, and are compared byte for byte; every JSON answer must also be
`application/json` and compact.

The cases run in order and change membership as they go (they add and remove replicas,
and empty the set once to see the 503); at the end the replicas found at the start serve
again, in the same order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass

from ringlb import contract
from ringlb.analysis.client import LoadClient, Reply

PROBE_NAME = "a3_probe"
CHECK_NAME = "a3_check"
GENERATED_NAME = re.compile(r"server_[0-9a-f]{6}")


@dataclass
class Context:
    """What the cases learn as they run: the replicas found at the start, and a name the
    balancer generated."""

    original: list[str]
    generated: str = ""


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    _: KW_ONLY
    # What to send: bytes as they are, anything else as JSON; a function of the context for
    # payloads that depend on the replicas found at the start.
    payload: object = None
    status: int = 200
    body: Callable[[Context], bytes] | None = None  # the exact expected body
    test: Callable[[Reply, Context], bool] | None = None  # or a property it must have
    describe: str = ""  # what `test` checks, for the report
    allow: str | None = None  # the expected Allow header
    json: bool = True  # the answer is JSON (only the heartbeat's is not)


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


def _fail(text: str) -> Callable[[Context], bytes]:
    body = contract.failure(text)
    return lambda ctx: body


def _replicas(extra: Callable[[Context], list[str]]) -> Callable[[Context], bytes]:
    return lambda ctx: contract.replica_list(extra(ctx))


def with_probe(ctx: Context) -> list[str]:
    return [*ctx.original, PROBE_NAME]


def _home(reply: Reply, ctx: Context) -> bool:
    message = reply.json()["message"]  # type: ignore[index]
    return (
        message.startswith("Hello from Server: ")
        and message.count(":") == 1
        and message.split()[-1] in ctx.original
    )


def _added_two(reply: Reply, ctx: Context) -> bool:
    """/add n=2 with one hostname: the name given, then a generated one."""
    names = reply.json()["message"]["replicas"]  # type: ignore[index]
    new = names[len(ctx.original) :]
    if names[: len(ctx.original)] != ctx.original or len(new) != 2 or new[0] != CHECK_NAME:
        return False
    ctx.generated = new[1]
    return GENERATED_NAME.fullmatch(new[1]) is not None


def _cases() -> list[Case]:
    cases = [
        Case("list replicas", "GET", "/rep", body=_replicas(lambda c: c.original)),
        Case(
            "proxy /home to a replica",
            "GET",
            "/home",
            test=_home,
            describe='{"message":"Hello from Server: <one of /rep>","status":"successful"}',
        ),
        Case("proxy /heartbeat", "GET", "/heartbeat", body=lambda ctx: b"", json=False),
        Case(
            "unknown path",
            "GET",
            "/other",
            status=400,
            body=lambda ctx: contract.unknown_endpoint("/other"),
        ),
        Case(
            "unknown path, query dropped",
            "GET",
            "/other?x=1&y=2",
            status=400,
            body=lambda ctx: contract.unknown_endpoint("/other"),
        ),
        Case(
            "GET / is proxied",
            "GET",
            "/",
            status=400,
            body=lambda ctx: contract.unknown_endpoint("/"),
        ),
    ]
    # /add refusals that the payload alone decides, in the contract's order.
    add_refusals: list[tuple[str, object, str]] = [
        ("more hostnames than n", {"n": 1, "hostnames": ["a1", "a2"]},
         contract.TOO_MANY_HOSTNAMES_ADD),
        ("not JSON", b"not json", contract.INVALID_JSON),
        ("not an object", b"[1, 2]", contract.INVALID_JSON),
        ("a JSON string", b'"text"', contract.INVALID_JSON),
        ('n = "2"', {"n": "2"}, contract.BAD_N),
        ("n = -1", {"n": -1}, contract.BAD_N),
        ("n = 1.5", {"n": 1.5}, contract.BAD_N),
        ("n = true", {"n": True}, contract.BAD_N),
        ('hostnames = "S5"', {"n": 1, "hostnames": "S5"}, contract.BAD_HOSTNAMES),
        ("hostnames with a number", {"n": 2, "hostnames": ["S5", 7]}, contract.BAD_HOSTNAMES),
        ("hostname with a space", {"n": 1, "hostnames": ["bad name"]},
         contract.invalid_hostname("bad name")),
        ("hostname starting with -", {"n": 1, "hostnames": ["-dash"]},
         contract.invalid_hostname("-dash")),
        ("hostname of 64 characters", {"n": 1, "hostnames": ["x" * 64]},
         contract.invalid_hostname("x" * 64)),
        ("duplicate hostname", {"n": 2, "hostnames": ["S7", "S7"]},
         contract.duplicate_hostname("S7")),
    ]  # fmt: skip
    cases += [
        Case(f"add: {what}", "POST", "/add", payload=payload, status=400, body=_fail(text))
        for what, payload, text in add_refusals
    ]
    cases += [
        Case(
            "add one named replica",
            "POST",
            "/add",
            payload={"n": 1, "hostnames": [PROBE_NAME]},
            body=_replicas(with_probe),
        ),
        Case(
            "add: hostname in use",
            "POST",
            "/add",
            payload={"n": 1, "hostnames": [PROBE_NAME]},
            status=400,
            body=_fail(contract.hostname_exists(PROBE_NAME)),
        ),
        Case(
            "add: above max replicas",
            "POST",
            "/add",
            payload={"n": 100000},
            status=400,
            test=lambda r, c: r.json()["message"].startswith("<Error> Cannot exceed "),  # type: ignore[index]
            describe='{"message":"<Error> Cannot exceed <max> replicas","status":"failure"}',
        ),
        Case(
            "add: body over 64 KiB",
            "POST",
            "/add",
            payload=json.dumps(
                {"n": 1, "hostnames": ["big"], "pad": "x" * contract.MAX_ADMIN_BODY}
            ).encode(),
            status=413,
            test=lambda r, c: r.json()["message"].startswith("<Error> "),  # type: ignore[index]
            describe="JSON error envelope",
        ),
        Case(
            "add none",
            "POST",
            "/add",
            payload={"n": 0},
            body=_replicas(with_probe),
        ),
        Case(
            "rm none",
            "DELETE",
            "/rm",
            payload={"n": 0},
            body=_replicas(with_probe),
        ),
        Case(
            "rm one named replica (DELETE)",
            "DELETE",
            "/rm",
            payload={"n": 1, "hostnames": [PROBE_NAME]},
            body=_replicas(lambda c: c.original),
        ),
        Case(
            "add it back at once (n missing)",
            "POST",
            "/add",
            payload={"hostnames": [PROBE_NAME]},
            body=_replicas(with_probe),
        ),
        Case(
            "rm one named replica (POST)",
            "POST",
            "/rm",
            payload={"n": 1, "hostnames": [PROBE_NAME]},
            body=_replicas(lambda c: c.original),
        ),
        Case(
            "add n = 2 with one hostname",
            "POST",
            "/add",
            payload={"n": 2, "hostnames": [CHECK_NAME]},
            test=_added_two,
            describe="the given name, then server_ + 6 hex digits",
        ),
        Case(
            "rm the generated one and the named one",
            "DELETE",
            "/rm",
            payload=lambda c: {"n": 2, "hostnames": [c.generated, CHECK_NAME]},
            test=lambda r, c: r.json()["message"]["replicas"] == c.original,  # type: ignore[index]
            describe="the replicas found at the start",
        ),
    ]
    for method in ("DELETE", "POST"):
        rm_refusals: list[tuple[str, object, Callable[[Context], bytes]]] = [
            ("more hostnames than n", {"n": 1, "hostnames": ["a1", "a2"]},
             _fail(contract.TOO_MANY_HOSTNAMES_RM)),
            ("n above N", lambda c: {"n": len(c.original) + 1}, lambda c: contract.failure(
                contract.cannot_remove(len(c.original) + 1, len(c.original)))),
            ("not a replica", {"n": 1, "hostnames": ["nosuch"]},
             _fail(contract.not_a_replica("nosuch"))),
            ("not JSON", b"{", _fail(contract.INVALID_JSON)),
            ("n = -3", {"n": -3}, _fail(contract.BAD_N)),
            ("hostnames with a number", {"hostnames": [1]}, _fail(contract.BAD_HOSTNAMES)),
        ]  # fmt: skip
        cases += [
            Case(f"rm ({method}): {what}", method, "/rm", payload=payload, status=400, body=body)
            for what, payload, body in rm_refusals
        ]
    for method, path, allow in (
        ("POST", "/rep", "GET, HEAD"),
        ("PUT", "/rep", "GET, HEAD"),
        ("GET", "/add", "POST"),
        ("PUT", "/add", "POST"),
        ("GET", "/rm", "DELETE, POST"),
    ):
        cases.append(
            Case(
                f"wrong method: {method} {path}",
                method,
                path,
                status=405,
                body=_fail(contract.method_not_allowed(method, path)),
                allow=allow,
            )
        )
    cases += [
        Case(
            "rm every replica",
            "DELETE",
            "/rm",
            payload=lambda c: {"n": len(c.original)},
            body=lambda ctx: contract.replica_list([]),
        ),
        Case("no replica: 503", "GET", "/home", status=503, body=_fail(contract.NO_REPLICAS)),
        Case(
            "no replica: 503 on any path",
            "GET",
            "/x",
            status=503,
            body=_fail(contract.NO_REPLICAS),
        ),
        Case(
            "add the replicas back",
            "POST",
            "/add",
            payload=lambda c: {"n": len(c.original), "hostnames": c.original},
            body=_replicas(lambda c: c.original),
        ),
    ]
    return cases


CASES: Sequence[Case] = _cases()


def _payload(case: Case, ctx: Context) -> bytes | None:
    """Returns the body to send for `case`."""
    payload = case.payload(ctx) if callable(case.payload) else case.payload
    if payload is None:
        return None
    return payload if isinstance(payload, bytes) else json.dumps(payload).encode()


def judge(case: Case, reply: Reply, ctx: Context) -> bool:
    """Returns whether `reply` is what the contract says for `case`."""
    if reply.status != case.status:
        return False
    if case.json:
        content_type = next(
            (v for k, v in reply.headers.items() if k.lower() == "content-type"), ""
        )
        if content_type != contract.JSON_CONTENT_TYPE:
            return False
        if b'": ' in reply.body or b'", "' in reply.body:
            return False  # not compact
    if case.body is not None and reply.body != case.body(ctx):
        return False
    if case.allow is not None:
        allow = next((v for k, v in reply.headers.items() if k.lower() == "allow"), None)
        if allow != case.allow:
            return False
    return case.test is None or case.test(reply, ctx)


async def run(client: LoadClient) -> list[Check]:
    """Runs every case in order; returns the table (the replicas found at the start serve
    again at the end)."""
    ctx = Context(await client.replicas())
    rows = []
    for case in CASES:
        data = _payload(case, ctx)
        reply = await client.call(case.method, case.path, data)
        passed = judge(case, reply, ctx)
        shown = data.decode(errors="replace") if data is not None else ""
        if len(shown) > 60:
            shown = shown[:40] + f"... ({len(data or b'')} bytes)"
        expected = case.body(ctx).decode() if case.body is not None else case.describe
        rows.append(
            Check(
                case.name,
                f"{case.method} {case.path} {shown}".strip(),
                f"{case.status} {expected}".strip(),
                reply.status,
                reply.body.decode(errors="replace")[:160],
                passed,
            )
        )
    return rows
