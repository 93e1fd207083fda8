"""The retry rule, as a table: what each kind of failed attempt leads to."""

from __future__ import annotations

import pytest

from ringlb.dataplane.retry import Stage, Verdict, blames_replica, decide

SAME, ELSEWHERE, GIVE_UP, CUT = (
    Verdict.RETRY_SAME,
    Verdict.RETRY_ELSEWHERE,
    Verdict.GIVE_UP,
    Verdict.CUT_SHORT,
)

# stage, idempotent, body consumed, answer started, attempts left -> verdict
TABLE = [
    # Nothing reached the client and nothing of a body went: the stage decides.
    (Stage.UNSENT, True, False, False, 2, SAME),
    (Stage.UNSENT, False, False, False, 0, SAME),  # nothing was sent: even a POST, even last
    (Stage.CONNECT, True, False, False, 2, ELSEWHERE),
    (Stage.CONNECT, False, False, False, 2, ELSEWHERE),  # never reached: a POST may move on
    (Stage.CONNECT, True, False, False, 0, GIVE_UP),
    (Stage.STALE, True, False, False, 0, SAME),  # a closed keep-alive: the same replica anew
    (Stage.STALE, False, False, False, 2, GIVE_UP),  # ... but a POST it may have read is not
    (Stage.SENT, True, False, False, 2, ELSEWHERE),
    (Stage.SENT, True, False, False, 0, GIVE_UP),
    (Stage.SENT, False, False, False, 2, GIVE_UP),
    (Stage.ANSWER, True, False, False, 1, ELSEWHERE),  # died between its head and its body
    (Stage.ANSWER, False, False, False, 1, GIVE_UP),
    (Stage.ANSWERED_5XX, True, False, False, 1, ELSEWHERE),
    (Stage.ANSWERED_5XX, True, False, False, 0, GIVE_UP),
    # Part of a streamed body went with the failed replica: it cannot be replayed.
    (Stage.SENT, True, True, False, 2, GIVE_UP),
    (Stage.STALE, True, True, False, 2, GIVE_UP),
    (Stage.CONNECT, True, True, False, 2, GIVE_UP),
    # Part of the answer reached the client: nothing else is possible.
    (Stage.ANSWER, True, False, True, 2, CUT),
    (Stage.ANSWER, False, True, True, 2, CUT),
]


@pytest.mark.parametrize(("stage", "idempotent", "consumed", "started", "left", "verdict"), TABLE)
def test_decide(stage, idempotent, consumed, started, left, verdict) -> None:
    assert (
        decide(
            stage,
            idempotent=idempotent,
            body_consumed=consumed,
            answer_started=started,
            attempts_left=left,
        )
        is verdict
    )


def test_only_real_failures_blame_the_replica() -> None:
    assert {s for s in Stage if blames_replica(s)} == {Stage.CONNECT, Stage.SENT, Stage.ANSWER}
