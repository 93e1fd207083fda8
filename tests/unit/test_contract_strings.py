"""Every string of CONTRACT.md, written out here once more on purpose: `ringlb.contract` is
the code's only copy, and this is the check that the copy says exactly what clients
compare against."""

from __future__ import annotations

from ringlb import contract


def test_envelopes() -> None:
    assert contract.replica_list(["server_1", "server_2", "server_3"]) == (
        b'{"message":{"N":3,"replicas":["server_1","server_2","server_3"]},"status":"successful"}'
    )
    assert contract.home_message("server_1") == (
        b'{"message":"Hello from Server: server_1","status":"successful"}'
    )
    assert contract.failure("No replicas available") == (
        b'{"message":"<Error> No replicas available","status":"failure"}'
    )
    assert contract.JSON_CONTENT_TYPE == "application/json"


def test_messages() -> None:
    assert contract.unknown_endpoint("/other") == (
        b'{"message":"<Error> \'/other\' endpoint does not exist in server replicas",'
        b'"status":"failure"}'
    )
    pairs = [
        (contract.NO_REPLICAS, "No replicas available"),
        (contract.INVALID_JSON, "Invalid JSON payload"),
        (contract.BAD_N, "'n' must be a non-negative integer"),
        (contract.BAD_HOSTNAMES, "'hostnames' must be a list of strings"),
        (
            contract.TOO_MANY_HOSTNAMES_ADD,
            "Length of hostname list is more than newly added instances",
        ),
        (
            contract.TOO_MANY_HOSTNAMES_RM,
            "Length of hostname list is more than removable instances",
        ),
        (contract.invalid_hostname("a b"), "Invalid hostname 'a b'"),
        (contract.duplicate_hostname("S7"), "Duplicate hostname 'S7' in payload"),
        (contract.hostname_exists("S5"), "Hostname 'S5' already exists"),
        (contract.cannot_exceed(50), "Cannot exceed 50 replicas"),
        (contract.cannot_remove(4, 3), "Cannot remove 4 replicas, only 3 exist"),
        (contract.not_a_replica("S9"), "Hostname 'S9' is not a replica"),
        (contract.method_not_allowed("GET", "/add"), "Method GET not allowed on /add"),
    ]
    for code, text in pairs:
        assert code == text
    assert contract.MAX_ADMIN_BODY == 64 * 1024
