"""The admin handlers in process (`/rep`, `/add`, `/rm`, `/policy`): exact bodies, statuses
and the checks against live membership, on the shipped fake runtime."""

from __future__ import annotations

import json

from control_rig import Rig
from ringlb.admin.api import AdminAPI


async def call(api: AdminAPI, method: str, path: str, payload: object = None, auth=None):
    body = b"" if payload is None else json.dumps(payload).encode()
    answer = await api.handle(method, path, body, auth)
    return answer.status, json.loads(answer.body), dict(answer.headers)


async def test_add_rm_and_rep_answer_the_contract() -> None:
    rig = Rig()
    api = AdminAPI(rig.rs, None, False)
    status, body, _ = await call(api, "POST", "/add", {"n": 3, "hostnames": ["S5", "S4"]})
    assert status == 200 and body["status"] == "successful"
    names = body["message"]["replicas"]
    assert names[:2] == ["S5", "S4"] and body["message"]["N"] == 3
    assert names[2].startswith("server_") and len(names[2]) == len("server_") + 6
    assert (await call(api, "GET", "/rep"))[1] == body
    status, body, _ = await call(api, "DELETE", "/rm", {"hostnames": ["S4"]})
    assert status == 200 and body["message"]["replicas"] == ["S5", names[2]]


async def test_checks_against_live_membership() -> None:
    rig = Rig()
    api = AdminAPI(rig.rs, None, False)
    await call(api, "POST", "/add", {"hostnames": ["a", "b"]})
    cases = [
        ("POST", "/add", {"hostnames": ["a"]}, "<Error> Hostname 'a' already exists"),
        ("POST", "/add", {"n": 9}, "<Error> Cannot exceed 10 replicas"),
        ("DELETE", "/rm", {"n": 3}, "<Error> Cannot remove 3 replicas, only 2 exist"),
        ("DELETE", "/rm", {"hostnames": ["zz"]}, "<Error> Hostname 'zz' is not a replica"),
    ]
    for method, path, payload, message in cases:
        status, body, _ = await call(api, method, path, payload)
        assert (status, body) == (400, {"message": message, "status": "failure"})
    assert rig.rs.snapshot.names() == ["a", "b"]  # nothing changed


async def test_a_start_that_fails_answers_500_naming_the_replica() -> None:
    rig = Rig()
    rig.runtime.fail_start("x", "image missing")
    status, body, _ = await call(
        AdminAPI(rig.rs, None, False), "POST", "/add", {"hostnames": ["x"]}
    )
    assert status == 500
    assert body["message"] == (
        "<Error> Replica 'x' failed to start: cannot start replica 'x': image missing"
    )


async def test_wrong_method_gets_405_with_allow() -> None:
    status, body, headers = await call(AdminAPI(Rig().rs, None, False), "GET", "/add")
    assert status == 405 and body["message"] == "<Error> Method GET not allowed on /add"
    assert headers[b"Allow"] == b"POST"


async def test_token_guards_writes_and_optionally_reads() -> None:
    rig = Rig()
    api = AdminAPI(rig.rs, "s3cret", False)
    status, body, headers = await call(api, "POST", "/add", {"n": 1})
    assert status == 401 and body["message"] == "<Error> Missing or invalid admin token"
    assert headers[b"WWW-Authenticate"] == b'Bearer realm="ringlb"'
    assert rig.rs.names() == []
    assert (await call(api, "GET", "/rep"))[0] == 200
    assert (await call(api, "POST", "/add", {"n": 1}, b"Bearer s3cret"))[0] == 200
    guarded = AdminAPI(rig.rs, "s3cret", True)
    assert (await call(guarded, "GET", "/rep"))[0] == 401


async def test_put_policy_switches_or_refuses_without_change() -> None:
    rig = Rig()
    api = AdminAPI(rig.rs, None, False)
    status, body, _ = await call(api, "PUT", "/policy", {"name": "ring", "options": {"vnodes": 0}})
    assert (status, body["message"]) == (400, "<Error> ring: vnodes (0) must be >= 1")
    assert rig.rs.policy.name == "round_robin"
    status, body, _ = await call(api, "PUT", "/policy", {"name": "maglev"})
    assert status == 200 and body["message"]["name"] == "maglev"
    assert rig.rs.policy.name == "maglev"
