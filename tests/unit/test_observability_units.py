"""Ring layouts for the status page and metrics, and the structured log formats."""

from __future__ import annotations

import json
import logging
import re

import pytest

from ringlb.logformat import JsonFormatter, LogfmtFormatter, logfmt_value
from ringlb.model import LATENCY_BOUNDS, Replica
from ringlb.policies import make_policy
from ringlb.policies.base import LAYOUT_POINTS


def replicas(count: int) -> list[Replica]:
    return [Replica(f"server_{i}", i, "127.0.0.1", 0) for i in range(1, count + 1)]


@pytest.mark.parametrize(
    ("name", "options", "size", "owned_each"),
    [
        ("assignment", {}, 512, 9),
        ("ring", {"vnodes": 40}, 1 << 32, 40),
        ("maglev", {"table_size": 5003}, 5003, None),
        ("maglev", {"table_size": 5003, "bounded": True}, 5003, None),
    ],
)
def test_ring_policies_describe_their_layout(name, options, size, owned_each) -> None:
    members = replicas(3)
    layout = make_policy(name, **options).build(members).layout()
    assert layout.size == size
    assert set(layout.owned) == set(members)
    if owned_each is not None:
        assert set(layout.owned.values()) == {owned_each}
    else:  # a Maglev table: every entry owned, shares within one of each other
        assert sum(layout.owned.values()) == size
        assert max(layout.owned.values()) - min(layout.owned.values()) <= 1
    assert sum(layout.share.values()) == pytest.approx(1)
    positions = [position for position, _ in layout.points]
    assert positions == sorted(positions) and len(positions) <= LAYOUT_POINTS
    assert {owner for _, owner in layout.points} == set(members)


def test_the_ring_share_is_the_key_space_each_replica_serves() -> None:
    members = replicas(3)
    picker = make_policy("assignment").build(members)
    layout = picker.layout()
    # Brute force: each slot belongs to the first virtual server at or after it (wrapping).
    owners = dict(picker.nodes())
    counts = dict.fromkeys(members, 0)
    for slot in range(512):
        counts[owners[min((p for p in owners if p >= slot), default=min(owners))]] += 1
    assert layout.share == {r: counts[r] / 512 for r in members}
    assert [round(layout.share[r], 2) for r in members] == [0.89, 0.04, 0.06]


def test_policies_without_a_ring_have_no_layout() -> None:
    picker = make_policy("round_robin").build(replicas(3))
    assert getattr(picker, "layout", None) is None


def test_answers_are_counted_by_status_class_and_latency_bucket() -> None:
    replica = replicas(1)[0]
    replica.count_answer(200, 0.0)
    replica.count_answer(204, LATENCY_BOUNDS[0])  # le: a bound belongs to its own bucket
    replica.count_answer(503, 60.0)
    assert replica.answers[2] == 2 and replica.answers[5] == 1
    assert replica.latency_counts[0] == 2 and replica.latency_counts[-1] == 1
    assert replica.latency_sum == pytest.approx(60.001)


def make_record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord(
        {"name": "ringlb.test", "levelname": "WARNING", "msg": "replica %s is down"}
    )
    record.args = ("server_2",)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_message_and_the_extra_fields() -> None:
    line = JsonFormatter().format(make_record(status=200, path="/home"))
    fields = json.loads(line)
    assert fields["level"] == "warning" and fields["logger"] == "ringlb.test"
    assert fields["msg"] == "replica server_2 is down"
    assert fields["status"] == 200 and fields["path"] == "/home"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields["ts"])


def test_a_traceback_stays_on_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        record = make_record()
        record.exc_info = sys.exc_info()
    for formatter in (JsonFormatter(), LogfmtFormatter()):
        line = formatter.format(record)
        assert "\n" not in line and "ValueError" in line


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        ("two words", '"two words"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("", '""'),
        (None, ""),
        (True, "true"),
        (1.5, "1.5"),
    ],
)
def test_logfmt_values_are_quoted_only_when_needed(value: object, text: str) -> None:
    assert logfmt_value(value) == text
