"""Policies on a real balancer: `GET /policy`, `PUT /policy` under load, key sources, weights."""

from __future__ import annotations

import http.client
import json
import random
import threading
from collections import Counter

from lbtest import BalancerProcess, request
from ringlb import contract
from ringlb.policies import REGISTRY


def served_by(reply_body: bytes) -> str:
    return json.loads(reply_body)["message"].split()[-1]


def test_get_policy_shape_and_bad_puts_get_400_naming_the_option(start_balancer) -> None:
    balancer: BalancerProcess = start_balancer(
        "--policy", "ring", "--policy-options", "vnodes=50,bounded=true", "--max-replicas", "60"
    )
    before = balancer.get("/policy")
    assert before.status == 200
    assert before.headers["content-type"] == "application/json"
    assert before.body == (
        b'{"message":{"name":"ring","options":{"hash":"xxhash64","vnodes":50,'
        b'"slots":4294967296,"bounded":true,"load_factor":1.25}},"status":"successful"}'
    )
    cases = [
        ({"options": {"vnodes": 0}}, "ring: vnodes (0) must be >= 1"),
        (
            {"name": "maglev", "options": {"table_size": 100}},
            "maglev: table_size (100) must be a prime number",
        ),
        ({"name": "nope"}, "policy: unknown policy 'nope' (known: " + ", ".join(REGISTRY) + ")"),
        ({"name": 3}, contract.BAD_POLICY_NAME),
        ({"name": "assignment"}, contract.policy_too_small("assignment", 56, 60)),
        ({"name": "ring", "options": []}, contract.BAD_POLICY_OPTIONS),
    ]
    for payload, text in cases:
        reply = balancer.call("PUT", "/policy", payload)
        assert (reply.status, reply.body) == (400, contract.failure(text)), payload
    not_json = request(balancer.port, "PUT", "/policy", body="{")
    assert (not_json.status, not_json.body) == (400, contract.failure(contract.INVALID_JSON))
    assert balancer.get("/policy").body == before.body
    wrong_method = balancer.call("POST", "/policy", {})
    assert wrong_method.status == 405
    assert wrong_method.headers["allow"] == "GET, HEAD, PUT"
    # No body: the current policy with its default options.
    reset = balancer.call("PUT", "/policy")
    assert reset.status == 200
    assert json.loads(reset.body)["message"]["options"]["vnodes"] == 160


def test_put_policy_under_load_drops_no_request(start_balancer) -> None:
    balancer: BalancerProcess = start_balancer("--policy", "maglev", "--seed", "3")
    replicas = set(balancer.replicas())
    switches = [
        {"name": name, "options": options}
        for name in REGISTRY
        for options in ({}, {"bounded": True})
        if options == {} or name in ("ring", "maglev", "rendezvous", "assignment")
    ]
    failures: list[str] = []
    served: Counter[str] = Counter()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", balancer.port, timeout=30)
        try:
            for _ in range(250):
                request_id = str(rng.randint(100000, 999999))
                try:
                    conn.request("GET", "/home", headers={"X-Request-ID": request_id})
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(repr(exc))
                    conn.close()
                    continue
                if response.status != 200:
                    failures.append(f"{response.status} {body[:80]!r}")
                else:
                    served[served_by(body)] += 1
        finally:
            conn.close()

    workers = [threading.Thread(target=client, args=(seed,)) for seed in range(6)]
    for worker in workers:
        worker.start()
    switched = 0
    while any(w.is_alive() for w in workers) and switched < 200:
        payload = switches[switched % len(switches)]
        reply = balancer.call("PUT", "/policy", payload)
        assert reply.status == 200, reply.body
        assert json.loads(reply.body)["message"]["name"] == payload["name"]
        switched += 1
    for worker in workers:
        worker.join(60)
    assert failures == []
    assert sum(served.values()) == 6 * 250
    assert set(served) <= replicas
    assert switched >= len(switches), "the load ended before every policy was switched to"


def test_same_request_id_same_replica(start_balancer) -> None:
    balancer: BalancerProcess = start_balancer("--policy", "maglev")
    first = served_by(balancer.get("/home", headers={"X-Request-ID": "123456"}).body)
    for _ in range(10):
        again = balancer.get("/home", headers={"X-Request-ID": "123456"})
        assert served_by(again.body) == first


def test_weighted_round_robin_serves_3_1_1_exactly(start_balancer) -> None:
    # Smooth weighted round robin: 3:1:1 exactly over every 5 requests.
    weighted: BalancerProcess = start_balancer("--policy", "round_robin", "--weights", "server_2=3")
    counts = Counter(served_by(weighted.get("/home").body) for _ in range(50))
    assert counts == {"server_1": 10, "server_2": 30, "server_3": 10}


def test_cookie_key_source_pins_a_client_to_one_replica(start_balancer) -> None:
    balancer: BalancerProcess = start_balancer("--policy", "maglev", "--key-source", "cookie:sid")
    for session in ("alice", "bob", "carol"):
        headers = {"Cookie": f"theme=dark; sid={session}"}
        seen = {served_by(balancer.get("/home", headers=headers).body) for _ in range(8)}
        assert len(seen) == 1, (session, seen)
    # Without the cookie each request gets a random id: the three replicas all serve.
    spread = {served_by(balancer.get("/home").body) for _ in range(60)}
    assert spread == set(balancer.replicas())
