"""What a failed attempt leads to: one pure function, the only copy of the retry rules.

An attempt is one try of a request on one replica. When it fails, `decide` says what
follows from where it failed (`Stage`) and what has happened so far. The rules, strictest
first:

1. Part of the answer reached the client: nothing can be taken back; end its connection.
2. Part of a streamed request body went to the failed replica: it cannot be replayed.
3. Nothing was sent (a pooled connection found closed): send it again, to the same replica
   on a new connection.
4. A reused keep-alive connection closed before any byte of the answer (the replica closed
   an idle connection, it did not crash): an idempotent request goes to the same replica
   again, on a new connection.
5. A request that reached a replica is sent to another one only when it is idempotent
   (RFC 9110 9.2.2): a POST the replica may have acted on is never sent twice.
6. Otherwise the next replica, while attempts are left.

`blames_replica` says which failures take the replica out of the ring at once.
"""

from __future__ import annotations

import enum

# RFC 9110 9.2.2: repeating these has the effect of sending them once.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class Stage(enum.Enum):
    """Where an attempt failed."""

    UNSENT = "unsent"  # a pooled connection was closed before the request went out
    CONNECT = "connect"  # no connection could be opened (refused, timed out)
    STALE = "stale"  # a reused connection closed before any byte of the answer
    SENT = "sent"  # the request went out; the replica failed before answering
    ANSWER = "answer"  # the replica failed after its answer began (reset, cut, garbage)
    ANSWERED_5XX = "5xx"  # it answered 5xx, held back so that another replica gets a try


class Verdict(enum.Enum):
    RETRY_SAME = "retry on a new connection to the same replica"
    RETRY_ELSEWHERE = "retry on the next replica"
    GIVE_UP = "give up: answer 502"
    CUT_SHORT = "cut short: end the client connection"


def decide(
    stage: Stage,
    *,
    idempotent: bool,
    body_consumed: bool,
    answer_started: bool,
    attempts_left: int,
) -> Verdict:
    """Returns what follows a failed attempt. `attempts_left` counts the replicas that may
    still be tried (a retry on the same replica does not use one)."""
    if answer_started:
        return Verdict.CUT_SHORT
    if body_consumed:
        return Verdict.GIVE_UP
    if stage is Stage.UNSENT or (stage is Stage.STALE and idempotent):
        return Verdict.RETRY_SAME
    if stage is not Stage.CONNECT and not idempotent:
        return Verdict.GIVE_UP
    return Verdict.RETRY_ELSEWHERE if attempts_left > 0 else Verdict.GIVE_UP


def blames_replica(stage: Stage) -> bool:
    """Returns whether a failure at `stage` takes the replica out of the ring at once. A
    closed idle connection is not the replica's fault, and a 5xx is an answer (outlier
    detection counts those)."""
    return stage in (Stage.CONNECT, Stage.SENT, Stage.ANSWER)
