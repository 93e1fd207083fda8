"""The HTTP contract (CONTRACT.md) as checks against a running balancer on `port`.

Each check leaves the replica set as it found it, so the same checks run against the
process runtime (tests/integration) and the Docker stack (tests/docker). Exact strings
are written out here on purpose: they are what clients compare against.
"""

from __future__ import annotations

import json
import re

from lbtest import Reply, request

HOME_RE = re.compile(
    rb'^\{"message":"Hello from Server: ([A-Za-z0-9][A-Za-z0-9_.-]*)",'
    rb'"status":"successful"\}$'
)
GENERATED_RE = re.compile(r"^server_[0-9a-f]{6}$")


def call(
    port: int, method: str, path: str, payload: object = None, raw: bytes | None = None
) -> Reply:
    body = raw if raw is not None else (None if payload is None else json.dumps(payload).encode())
    return request(port, method, path, body=body)


def replicas(port: int) -> list[str]:
    return json.loads(call(port, "GET", "/rep").body)["message"]["replicas"]


def error_body(text: str) -> bytes:
    return b'{"message":"<Error> ' + text.encode() + b'","status":"failure"}'


def assert_json(reply: Reply, status: int) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"] == "application/json"
    assert b'": ' not in reply.body and b'", "' not in reply.body, "JSON must be compact"


def check_rep(port: int) -> None:
    reply = call(port, "GET", "/rep")
    assert_json(reply, 200)
    doc = json.loads(reply.body)
    assert doc["status"] == "successful"
    assert list(doc) == ["message", "status"]
    assert list(doc["message"]) == ["N", "replicas"]
    assert doc["message"]["N"] == len(doc["message"]["replicas"]) >= 1


def check_home(port: int) -> None:
    names = replicas(port)
    for _ in range(5):
        reply = call(port, "GET", "/home")
        assert_json(reply, 200)
        match = HOME_RE.match(reply.body)
        assert match, reply.body
        assert match.group(1).decode() in names
        assert reply.body.count(b":") == 3  # message's own ':' plus the two JSON keys'


def check_heartbeat(port: int) -> None:
    reply = call(port, "GET", "/heartbeat")
    assert reply.status == 200
    assert reply.body == b""


def check_unknown_path(port: int) -> None:
    expected = error_body("'/other' endpoint does not exist in server replicas")
    reply = call(port, "GET", "/other")
    assert_json(reply, 400)
    assert reply.body == expected
    reply = call(port, "GET", "/other?x=1&y=2")
    assert reply.body == expected, "the query string is not part of the path"
    reply = call(port, "GET", "/")
    assert_json(reply, 400)
    assert reply.body == error_body("'/' endpoint does not exist in server replicas")


def check_request_id_sticks(port: int) -> None:
    for request_id in ("123456", "654321", "client-42"):
        seen = {
            request(port, "GET", "/home", headers={"X-Request-ID": request_id}).body
            for _ in range(8)
        }
        assert len(seen) == 1, (request_id, seen)


ADD_ERRORS = [
    (
        {"n": 1, "hostnames": ["a1", "a2"]},
        "Length of hostname list is more than newly added instances",
    ),
    (b"not json", "Invalid JSON payload"),
    (b"[1, 2]", "Invalid JSON payload"),
    (b'"text"', "Invalid JSON payload"),
    ({"n": "2"}, "'n' must be a non-negative integer"),
    ({"n": -1}, "'n' must be a non-negative integer"),
    ({"n": 1.5}, "'n' must be a non-negative integer"),
    ({"n": True}, "'n' must be a non-negative integer"),
    ({"n": 1, "hostnames": "S5"}, "'hostnames' must be a list of strings"),
    ({"n": 2, "hostnames": ["S5", 7]}, "'hostnames' must be a list of strings"),
    ({"n": 1, "hostnames": ["bad name"]}, "Invalid hostname 'bad name'"),
    ({"n": 1, "hostnames": ["-dash"]}, "Invalid hostname '-dash'"),
    ({"n": 1, "hostnames": ["x" * 64]}, f"Invalid hostname '{'x' * 64}'"),
    ({"n": 2, "hostnames": ["S7", "S7"]}, "Duplicate hostname 'S7' in payload"),
    ({"n": 100000}, "Cannot exceed 50 replicas"),
]


def _payload(item: object) -> dict[str, object]:
    return {"raw": item} if isinstance(item, bytes) else {"payload": item}


def check_add_errors(port: int) -> None:
    before = call(port, "GET", "/rep").body
    existing = replicas(port)[0]
    cases = [
        *ADD_ERRORS,
        ({"n": 1, "hostnames": [existing]}, f"Hostname '{existing}' already exists"),
    ]
    for item, text in cases:
        reply = call(port, "POST", "/add", **_payload(item))
        assert_json(reply, 400)
        assert reply.body == error_body(text), (item, reply.body)
    assert call(port, "GET", "/rep").body == before, "a refused /add changed the replica set"


def check_rm_errors(port: int) -> None:
    before = call(port, "GET", "/rep").body
    count = len(replicas(port))
    cases = [
        (
            {"n": 1, "hostnames": ["a1", "a2"]},
            "Length of hostname list is more than removable instances",
        ),
        ({"n": count + 1}, f"Cannot remove {count + 1} replicas, only {count} exist"),
        ({"n": 1, "hostnames": ["nobody"]}, "Hostname 'nobody' is not a replica"),
        (b"{", "Invalid JSON payload"),
        ({"n": -3}, "'n' must be a non-negative integer"),
        ({"hostnames": [1]}, "'hostnames' must be a list of strings"),
    ]
    for item, text in cases:
        for method in ("DELETE", "POST"):
            reply = call(port, method, "/rm", **_payload(item))
            assert_json(reply, 400)
            assert reply.body == error_body(text), (method, item, reply.body)
    assert call(port, "GET", "/rep").body == before, "a refused /rm changed the replica set"


def check_add_then_rm(port: int) -> None:
    before = replicas(port)
    reply = call(port, "POST", "/add", {"n": 2, "hostnames": ["chk_a"]})
    assert_json(reply, 200)
    doc = json.loads(reply.body)
    added = doc["message"]["replicas"][len(before) :]
    assert doc["message"]["replicas"][: len(before)] == before
    assert added[0] == "chk_a" and GENERATED_RE.match(added[1]), added
    assert doc["message"]["N"] == len(before) + 2
    assert replicas(port) == before + added

    # `n` missing means len(hostnames); removed names can be re-added at once.
    reply = call(port, "DELETE", "/rm", {"hostnames": ["chk_a"]})
    assert_json(reply, 200)
    assert "chk_a" not in json.loads(reply.body)["message"]["replicas"]
    reply = call(port, "POST", "/add", {"hostnames": ["chk_a"]})
    assert_json(reply, 200)
    assert json.loads(reply.body)["message"]["replicas"][-1] == "chk_a"

    reply = call(port, "POST", "/rm", {"n": 2, "hostnames": ["chk_a", added[1]]})
    assert_json(reply, 200)
    assert json.loads(reply.body)["message"] == {"N": len(before), "replicas": before}


def check_empty_add_and_rm(port: int) -> None:
    before = call(port, "GET", "/rep").body
    for method, path in (("POST", "/add"), ("DELETE", "/rm")):
        reply = call(port, method, path, {"n": 0})
        assert_json(reply, 200)
        assert reply.body == before


def check_wrong_methods(port: int) -> None:
    for method, path, allow in (
        ("POST", "/rep", "GET, HEAD"),
        ("DELETE", "/rep", "GET, HEAD"),
        ("GET", "/add", "POST"),
        ("PUT", "/add", "POST"),
        ("GET", "/rm", "DELETE, POST"),
    ):
        reply = call(port, method, path)
        assert_json(reply, 405)
        assert reply.headers["allow"] == allow
        assert reply.body == error_body(f"Method {method} not allowed on {path}")


def check_oversize_admin_body(port: int) -> None:
    before = call(port, "GET", "/rep").body
    payload = json.dumps({"n": 1, "hostnames": ["big"], "pad": "x" * 70_000}).encode()
    reply = call(port, "POST", "/add", raw=payload)
    assert_json(reply, 413)
    assert json.loads(reply.body)["status"] == "failure"
    assert json.loads(reply.body)["message"].startswith("<Error> ")
    assert call(port, "GET", "/rep").body == before


CHECKS = [
    check_rep,
    check_home,
    check_heartbeat,
    check_unknown_path,
    check_request_id_sticks,
    check_add_errors,
    check_rm_errors,
    check_add_then_rm,
    check_empty_add_and_rm,
    check_wrong_methods,
    check_oversize_admin_body,
]


def run_contract_checks(port: int) -> None:
    """Runs every check against the balancer on `port`; raises on the first failure."""
    for check in CHECKS:
        check(port)
