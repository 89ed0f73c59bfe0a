"""Every retry verdict comes from one pure function: the table of its cases."""

from __future__ import annotations

import pytest

from synapse.retry import (
    DELIVERED,
    GIVE_UP,
    OUTAGE,
    PROCESS,
    RAISED,
    REDELIVER,
    REFUSED,
    RETRY,
    error_text,
    is_outage,
    verdict,
)

CASES = [
    # stage, deliveries, max, error, connection -> action, reason
    (DELIVERED, 1, 5, "", False, PROCESS, None),
    (DELIVERED, 5, 5, "", False, PROCESS, None),  # the 5th delivery is still tried
    (DELIVERED, 6, 5, "", False, GIVE_UP, "max_deliveries"),  # kept dying on it
    (DELIVERED, 2, 1, "", False, GIVE_UP, "max_deliveries"),
    (REFUSED, 1, 5, "WRONGTYPE Operation against a key", False, RETRY, None),
    (REFUSED, 4, 5, "NOPERM No permissions to access a key", False, RETRY, None),
    (
        REFUSED,
        5,
        5,
        "ERR The stream has exhausted the last possible ID",
        False,
        GIVE_UP,
        "destination_error",
    ),
    (REFUSED, 9, 5, "x holds a string, not a stream", False, GIVE_UP, "destination_error"),
    (REFUSED, 1, 1, "WRONGTYPE", False, GIVE_UP, "destination_error"),
    # a server-wide refusal is an outage, whatever the count: never dead-lettered for it
    (
        REFUSED,
        99,
        5,
        "OOM command not allowed when used memory > 'maxmemory'.",
        False,
        OUTAGE,
        None,
    ),
    (REFUSED, 5, 5, "READONLY You can't write against a read only replica.", False, OUTAGE, None),
    (REFUSED, 5, 5, "LOADING Redis is loading the dataset in memory", False, OUTAGE, None),
    (REFUSED, 5, 5, "BUSY Redis is busy running a script.", False, OUTAGE, None),
    (REFUSED, 5, 5, "MASTERDOWN Link with MASTER is down", False, OUTAGE, None),
    (REFUSED, 5, 5, "NOREPLICAS Not enough good replicas to write.", False, OUTAGE, None),
    (REFUSED, 5, 5, "MISCONF Errors writing to the AOF file", False, OUTAGE, None),
    (
        REFUSED,
        5,
        5,
        "BUSYGROUP Consumer Group name already exists",
        False,
        GIVE_UP,
        "destination_error",
    ),  # not BUSY: the first word is the code
    (RAISED, 1, 5, "Connection reset by peer", True, OUTAGE, None),
    (RAISED, 1, 5, "OOM command not allowed", False, OUTAGE, None),
    (
        RAISED,
        1,
        5,
        "NOPERM this user has no permissions to run the 'evalsha' command",
        False,
        OUTAGE,
        None,
    ),
    (RAISED, 1, 5, "ERR Error running script: too many results to unpack", False, REDELIVER, None),
]


@pytest.mark.parametrize(
    ("stage", "deliveries", "limit", "error", "conn", "action", "reason"), CASES
)
def test_verdict_table(
    stage: str,
    deliveries: int,
    limit: int,
    error: str,
    conn: bool,
    action: str,
    reason: str | None,
) -> None:
    """Each (stage, count, error) gets the verdict the guarantees promise."""
    found = verdict(
        stage, deliveries=deliveries, max_deliveries=limit, error=error, connection=conn, rand=0.5
    )
    assert (found.action, found.reason) == (action, reason)


def test_retry_delay_is_short_capped_and_grows() -> None:
    """Retries wait 0.1 s doubling to a 5 s cap (full jitter), never claim_idle_ms."""
    delays = [
        verdict(REFUSED, deliveries=n, max_deliveries=100, error="WRONGTYPE", rand=0.999).delay_s
        for n in (1, 2, 3, 10, 50)
    ]
    assert delays[0] < delays[1] < delays[2] <= 5.0
    assert delays[3] == pytest.approx(5.0, rel=0.01) and delays[4] == delays[3]
    assert verdict(REFUSED, deliveries=1, error="WRONGTYPE", rand=0.0).delay_s > 0


def test_error_text_puts_back_the_code_redis_py_strips() -> None:
    """redis-py keeps an error's code apart; the verdict sees it as the server sent it."""
    from redis.exceptions import OutOfMemoryError, ResponseError

    oom = OutOfMemoryError("command not allowed", status_code="OOM")
    assert error_text(oom).startswith("OOM ") and is_outage(error_text(oom))
    assert error_text(ResponseError("WRONGTYPE x")) == "WRONGTYPE x"


def test_unknown_stage_is_a_bug() -> None:
    """A stage the policy does not know raises rather than guessing."""
    with pytest.raises(ValueError, match="unknown stage"):
        verdict("later")
