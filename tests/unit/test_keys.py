"""Key sources: what the request key is computed on."""

from __future__ import annotations

import pytest

from ringlb.dataplane.keys import key_from_text, make_key_source

HEADERS = [
    (b"Host", b"lb"),
    (b"X-Request-ID", b"123456"),
    (b"X-User", b"alice"),
    (b"Cookie", b"theme=dark; sid=s3cr3t"),
]
TARGET = b"/home/x?user=bob&page=2"
PEER = b"10.0.0.7"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("x-request-id", 123456),  # a 6-digit id is the integer itself (CONTRACT.md)
        ("X-Request-ID", 123456),
        ("header:x-user", key_from_text(b"alice")),
        ("cookie:sid", key_from_text(b"s3cr3t")),
        ("client", key_from_text(PEER)),
        ("path", key_from_text(b"/home/x")),
        ("query:user", key_from_text(b"bob")),
        ("random", None),
    ],
)
def test_each_key_source_reads_its_part_of_the_request(spec: str, expected: int | None) -> None:
    assert make_key_source(spec).key(HEADERS, TARGET, PEER) == expected


@pytest.mark.parametrize("spec", ["header:X-Missing", "cookie:none", "query:none"])
def test_a_missing_key_means_a_random_id(spec: str) -> None:
    assert make_key_source(spec).key(HEADERS, TARGET, PEER) is None


def test_non_numeric_ids_are_reduced_by_a_stable_hash() -> None:
    source = make_key_source("x-request-id")
    key = source.key([(b"x-request-id", b"abc-123")], b"/", PEER)
    assert key == key_from_text(b"abc-123") != key_from_text(b"abc-124")
    assert source.key([(b"x-request-id", b"1234567")], b"/", PEER) != 1234567


@pytest.mark.parametrize("spec", ["bogus", "header:", "cookie", "query: "])
def test_unknown_key_sources_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=r"key_source: .* is not one of x-request-id, header:NAME"):
        make_key_source(spec)
