"""The admin plane closed by a token, and served on a listener of its own."""

from __future__ import annotations

import json

from contract_checks import error_body

from lbtest import free_port, request, wait_until

TOKEN = "s3cret-token"
UNAUTHORIZED = error_body("Missing or invalid admin token")


def test_state_changes_need_the_token(start_balancer) -> None:
    balancer = start_balancer(env={"RINGLB_ADMIN_TOKEN": TOKEN})
    before = balancer.get("/rep").body
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        for method, path, payload in (
            ("POST", "/add", {"n": 1}),
            ("DELETE", "/rm", {"n": 1}),
            ("PUT", "/policy", {"policy": "round_robin"}),
        ):
            reply = balancer.call(method, path, payload, headers=headers)
            assert reply.status == 401, (method, path, headers)
            assert reply.body == UNAUTHORIZED
            assert reply.headers["www-authenticate"] == 'Bearer realm="ringlb"'
    assert balancer.get("/rep").body == before, "a refused request changed the replica set"
    # Reads stay open; the right token opens the rest.
    assert balancer.get("/policy").status == 200
    reply = balancer.call("POST", "/add", {"hostnames": ["S9"]}, headers=bearer())
    assert reply.status == 200 and json.loads(reply.body)["message"]["replicas"][-1] == "S9"


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def test_reads_can_be_closed_too(start_balancer) -> None:
    balancer = start_balancer("--admin-protect-reads", "true", env={"RINGLB_ADMIN_TOKEN": TOKEN})
    assert balancer.get("/rep").status == 401
    assert balancer.get("/rep", headers=bearer()).status == 200
    assert balancer.get("/home").status == 200, "proxied paths never need the token"


def test_admin_api_on_its_own_listener(start_balancer) -> None:
    admin_port = free_port()
    balancer = start_balancer("--admin-port", str(admin_port))
    wait_until(lambda: request(admin_port, "GET", "/rep").status == 200, 10)
    reply = request(admin_port, "GET", "/rep")
    assert json.loads(reply.body)["message"]["N"] == 3
    # The main port proxies every path, the admin ones included.
    reply = balancer.get("/rep")
    assert reply.status == 400
    assert reply.body == error_body("'/rep' endpoint does not exist in server replicas")
    assert balancer.get("/home").status == 200
    # The admin listener serves nothing else.
    reply = request(admin_port, "GET", "/home")
    assert reply.status == 404
    assert reply.body == error_body(
        "'/home' is not an admin endpoint (this listener serves only the admin API)"
    )
    reply = request(admin_port, "POST", "/add", body=json.dumps({"hostnames": ["via_admin"]}))
    assert json.loads(reply.body)["message"]["replicas"][-1] == "via_admin"
