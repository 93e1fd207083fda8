"""A worker's view of the membership pushed by the control process: the same replica
objects across pushes, the ones that left returned, ejections applied at once and
reported, outliers reported once per run of errors; the policy spec round trip."""

from __future__ import annotations

import asyncio
import base64

import pytest

from ringlb.control.outliers import OutlierRules
from ringlb.model import Replica
from ringlb.policies import REGISTRY, describe_policy, make_policy
from ringlb.policies.base import table_to_share
from ringlb.workers.pool import policy_spec
from ringlb.workers.worker import PushedMembership, policy_of


class RecordingChannel:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def tell(self, message: dict) -> None:
        self.sent.append(message)


def push(
    version: int,
    members: list[tuple[str, int, bool]],
    policy: str = "round_robin",
    table_follows: bool = False,
):
    return {
        "op": "membership",
        "version": version,
        "policy": {"name": policy, "options": {}},
        "members": [[n, rid, "127.0.0.1", 6000 + rid, 1.0, s] for n, rid, s in members],
        "table_follows": table_follows,
    }


def test_pushes_keep_replica_objects_and_return_the_ones_that_left() -> None:
    routing = PushedMembership(RecordingChannel(), OutlierRules(3, 10.0, 2))  # type: ignore[arg-type]
    assert routing.apply(push(1, [("a", 1, True), ("b", 2, True), ("c", 3, False)])) == []
    a, b = routing.replica("a", 1), routing.replica("b", 2)
    assert routing.snapshot.names() == ["a", "b"]
    gone = routing.apply(push(2, [("a", 1, True), ("b", 4, True)]))  # b re-added: new rid
    assert routing.replica("a", 1) is a
    assert {r.name for r in gone} == {"b", "c"} and b in gone
    assert routing.snapshot.names() == ["a", "b"] and routing.pushed == 2


def test_an_ejection_leaves_this_worker_at_once_and_is_reported() -> None:
    channel = RecordingChannel()
    routing = PushedMembership(channel, OutlierRules(2, 10.0, 2))  # type: ignore[arg-type]
    routing.apply(push(1, [("a", 1, True), ("b", 2, True)]))
    a = routing.replica("a", 1)
    assert a is not None
    routing.eject(a)
    assert routing.snapshot.names() == ["b"]
    routing.eject(a)  # already out: not reported twice
    b = routing.replica("b", 2)
    assert b is not None
    routing.report_error(b)
    routing.report_error(b)
    routing.report_error(b)
    assert channel.sent == [
        {"op": "eject", "name": "a", "rid": 1},
        {"op": "outlier", "name": "b", "rid": 2},
    ]


async def test_a_maglev_push_builds_the_same_table_as_the_control_process() -> None:
    routing = PushedMembership(RecordingChannel(), OutlierRules(3, 10.0, 2))  # type: ignore[arg-type]
    routing.apply(push(1, [("s1", 1, True), ("s2", 2, True), ("s3", 3, True)], "maglev"))
    await routing.tables.settled()
    here = routing.snapshot.picker
    there = make_policy("maglev").build(routing.replicas())
    assert all(here.pick(k).name == there.pick(k).name for k in range(0, 10**6, 997))


async def test_a_worker_takes_the_control_processs_table_of_the_push_it_routes_on() -> None:
    members = [("s1", 1, True), ("s2", 2, True), ("s3", 3, True)]
    routing = PushedMembership(RecordingChannel(), OutlierRules(3, 10.0, 2))  # type: ignore[arg-type]
    routing.apply(push(1, members, "maglev", table_follows=True))
    assert not routing.tables.complete.is_set()  # waits for the table, on the interim
    await asyncio.sleep(0.05)
    assert not routing.tables.complete.is_set() and routing.tables.builds_sliced == 0
    control = make_policy("maglev").build(
        [Replica(n, rid, "127.0.0.1", 6000 + rid) for n, rid, _ in members]
    )
    table = {"op": "table", "table": base64.b64encode(table_to_share(control)).decode()}
    assert not routing.adopt_table({**table, "version": 0})  # not the push it routes on
    assert routing.adopt_table({**table, "version": 1})
    assert routing.tables.complete.is_set() and routing.tables_taken == 1
    here = routing.snapshot.picker
    assert all(
        here.pick(k) is routing.replica(control.pick(k).name, control.pick(k).rid)
        for k in range(0, 10**6, 997)
    )

    routing.apply(push(2, members, "maglev", table_follows=True))
    s1 = routing.replica("s1", 1)
    assert s1 is not None
    routing.eject(s1)  # this worker routes on less than push 2 now: it builds that here
    assert not routing.adopt_table({**table, "version": 2})
    await routing.tables.settled()
    assert routing.snapshot.names() == ["s2", "s3"] and routing.tables_taken == 1
    assert routing.tables.builds_sliced == 1


@pytest.mark.parametrize("bounded", [False, True])
@pytest.mark.parametrize("name", list(REGISTRY))
def test_a_policy_crosses_to_the_workers_unchanged(name: str, bounded: bool) -> None:
    if bounded and not getattr(REGISTRY[name], "keyed", False):
        pytest.skip("bounded loads wrap hash policies only")
    policy = make_policy(name, bounded=True) if bounded else make_policy(name)
    assert describe_policy(policy_of(policy_spec(policy))) == describe_policy(policy)


def test_workers_setting_takes_a_count_or_auto_and_names_itself_when_wrong() -> None:
    import os

    from ringlb.config import SettingsError, load_settings

    assert load_settings().worker_count() == 1
    assert load_settings(workers="3").worker_count() == 3
    assert load_settings(workers="auto").worker_count() == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "1.5"):
        with pytest.raises(SettingsError) as error:
            load_settings(workers=bad)
        assert str(error.value) == (
            "invalid workers (RINGLB_WORKERS, --workers): must be a whole number >= 1 or "
            f"'auto'; got {bad!r}"
        )
    with pytest.raises(SettingsError, match=r"autoscale needs workers 1 \(workers is 2\)"):
        load_settings(workers="2", autoscale=True)
    with pytest.raises(SettingsError, match=r"tls_port needs workers 1 \(workers is 2\)"):
        load_settings(workers="2", tls_port=8443, tls_cert="server.pem")
