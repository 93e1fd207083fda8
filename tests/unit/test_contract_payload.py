"""Payload validation of /add and /rm (contract.py), with the exact contract strings."""

from __future__ import annotations

import pytest

from ringlb.contract import (
    ContractError,
    MembershipRequest,
    dumps,
    is_valid_hostname,
    parse_membership_payload,
)


@pytest.mark.parametrize(
    ("raw", "adding", "expected"),
    [
        (
            b'{"n": 4, "hostnames": ["S5", "S4", "S10", "S11"]}',
            True,
            MembershipRequest(4, ("S5", "S4", "S10", "S11")),
        ),
        (b'{"hostnames": ["a", "b"]}', True, MembershipRequest(2, ("a", "b"))),
        (b'{"n": 3}', False, MembershipRequest(3, ())),
        (b"", True, MembershipRequest(0, ())),
        (b'{"n": 2, "hostnames": null}', True, MembershipRequest(2, ())),
        (b'{"n": 1, "hostnames": ["not valid"]}', False, MembershipRequest(1, ("not valid",))),
    ],
)
def test_valid_payloads(raw: bytes, adding: bool, expected: MembershipRequest) -> None:
    assert parse_membership_payload(raw, adding=adding) == expected


@pytest.mark.parametrize(
    ("raw", "adding", "message"),
    [
        (
            b'{"n": 1, "hostnames": ["a", "b"]}',
            True,
            "Length of hostname list is more than newly added instances",
        ),
        (
            b'{"n": 1, "hostnames": ["a", "b"]}',
            False,
            "Length of hostname list is more than removable instances",
        ),
        (b"{", True, "Invalid JSON payload"),
        (b"\xff", True, "Invalid JSON payload"),
        (b"[]", True, "Invalid JSON payload"),
        (b"3", False, "Invalid JSON payload"),
        (b'{"n": -1}', True, "'n' must be a non-negative integer"),
        (b'{"n": 2.0}', True, "'n' must be a non-negative integer"),
        (b'{"n": false}', True, "'n' must be a non-negative integer"),
        (b'{"n": null}', True, "'n' must be a non-negative integer"),
        (b'{"hostnames": "abc"}', True, "'hostnames' must be a list of strings"),
        (b'{"hostnames": [["a"]]}', False, "'hostnames' must be a list of strings"),
        (b'{"hostnames": ["ok", "bad/name"]}', True, "Invalid hostname 'bad/name'"),
        (b'{"hostnames": ["a", "a"]}', True, "Duplicate hostname 'a' in payload"),
        (b'{"hostnames": ["a", "a"]}', False, "Duplicate hostname 'a' in payload"),
    ],
)
def test_invalid_payloads(raw: bytes, adding: bool, message: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_membership_payload(raw, adding=adding)
    assert info.value.status == 400
    assert info.value.text == message
    assert info.value.body() == dumps({"message": f"<Error> {message}", "status": "failure"})


@pytest.mark.parametrize("name", ["server_1", "S5", "a", "A.b-c_d", "9" * 63])
def test_hostnames_accepted(name: str) -> None:
    assert is_valid_hostname(name)


@pytest.mark.parametrize("name", ["", "_a", ".a", "-a", "a b", "a/b", "é", "9" * 64, 5, None])
def test_hostnames_refused(name: object) -> None:
    assert not is_valid_hostname(name)


def test_envelopes_are_compact() -> None:
    assert dumps({"a": 1, "b": [1, 2]}) == b'{"a":1,"b":[1,2]}'
