"""Every retry verdict comes from one pure function: the table of its cases."""

from __future__ import annotations

import pytest

from synapse.errors import Failure, classify_reply
from synapse.retry import (
    DELIVERED,
    GIVE_UP,
    GIVE_UP_ROUNDS,
    OUTAGE,
    PROCESS,
    RAISED,
    REDELIVER,
    REFUSED,
    REGIVEN,
    RETRY,
    RETRY_BACKOFF,
    SETUP,
    verdict,
)

OOM = "OOM command not allowed when used memory > 'maxmemory'."
CONN, NOPERM, NOGROUP = Failure.CONNECTION, Failure.NO_PERMISSION, Failure.NO_GROUP
INTERNAL, RESPONSE, OUT = Failure.INTERNAL, Failure.RESPONSE, Failure.OUTAGE

#: The stage's inputs -> (action, reason). A REFUSED row names the refusals' texts as the
#: commit script reports them (classified by errors.classify_reply); "dl" means the
#: dead-letter stream is among the refusers.
CASES: list[tuple[str, dict[str, object], str, str | None]] = [
    (DELIVERED, {"deliveries": 1, "max_deliveries": 5}, PROCESS, None),
    (DELIVERED, {"deliveries": 5, "max_deliveries": 5}, PROCESS, None),  # 5th still tried
    (DELIVERED, {"deliveries": 6, "max_deliveries": 5}, GIVE_UP, "max_deliveries"),
    (DELIVERED, {"deliveries": 2, "max_deliveries": 1}, GIVE_UP, "max_deliveries"),
    (REFUSED, {"deliveries": 1, "errors": ["WRONGTYPE Operation against a key"]}, RETRY, None),
    (REFUSED, {"deliveries": 4, "errors": ["NOPERM No permissions to access a key"]}, RETRY, None),
    (
        REFUSED,
        {"deliveries": 5, "errors": ["ERR The stream has exhausted the last possible ID"]},
        GIVE_UP,
        "destination_error",
    ),
    (REFUSED, {"deliveries": 9, "errors": ["x holds a string"]}, GIVE_UP, "destination_error"),
    (
        REFUSED,
        {"deliveries": 1, "max_deliveries": 1, "errors": ["WRONGTYPE"]},
        GIVE_UP,
        "destination_error",
    ),
    # the dead-letter stream among the refusers at the limit: kept, retried later
    (REFUSED, {"deliveries": 5, "errors": ["WRONGTYPE"], "dl": True}, RETRY, None),
    (REFUSED, {"deliveries": 1, "errors": ["WRONGTYPE"], "dl": True}, RETRY, None),
    # a server-wide refusal is an outage, whatever the count: never dead-lettered for it
    (REFUSED, {"deliveries": 99, "errors": [OOM]}, OUTAGE, None),
    (REFUSED, {"deliveries": 5, "errors": ["WRONGTYPE x", OOM]}, OUTAGE, None),  # any one
    (REFUSED, {"deliveries": 5, "errors": ["READONLY You can't write"]}, OUTAGE, None),
    (REFUSED, {"deliveries": 5, "errors": ["LOADING Redis is loading"]}, OUTAGE, None),
    (REFUSED, {"deliveries": 5, "errors": ["BUSY Redis is busy running a script."]}, OUTAGE, None),
    (REFUSED, {"deliveries": 5, "errors": ["MASTERDOWN Link with MASTER is down"]}, OUTAGE, None),
    (REFUSED, {"deliveries": 5, "errors": ["NOREPLICAS Not enough good replicas"]}, OUTAGE, None),
    (REFUSED, {"deliveries": 5, "errors": ["MISCONF Errors writing to the AOF"]}, OUTAGE, None),
    (
        REFUSED,
        {"deliveries": 5, "errors": ["BUSYGROUP Consumer Group name already exists"]},
        GIVE_UP,
        "destination_error",
    ),  # not BUSY: the first word is the code
    (RAISED, {"failure": CONN}, OUTAGE, None),
    (RAISED, {"failure": OUT}, OUTAGE, None),
    (RAISED, {"failure": NOPERM}, OUTAGE, None),  # the ACL refuses the script: not the entries
    (RAISED, {"failure": NOGROUP}, SETUP, None),
    (RAISED, {"failure": RESPONSE}, REDELIVER, None),  # an entry may break the commit
    (RAISED, {"failure": INTERNAL}, REDELIVER, None),  # a bug: bounded by the count
    (REGIVEN, {"round": 1}, GIVE_UP, "destination_error"),  # again, with the new refusers
    (REGIVEN, {"round": GIVE_UP_ROUNDS - 1}, GIVE_UP, "destination_error"),
    (REGIVEN, {"round": GIVE_UP_ROUNDS}, RETRY, None),  # refused every round: later
    (REGIVEN, {"round": 1, "dl": True}, RETRY, None),  # nowhere to give it up to
]


@pytest.mark.parametrize(("stage", "given", "action", "reason"), CASES)
def test_verdict_table(
    stage: str, given: dict[str, object], action: str, reason: str | None
) -> None:
    """Each (stage, count, failure) gets the verdict the guarantees promise."""
    kwargs: dict[str, object] = {"rand": 0.5, "max_deliveries": 5}
    for key, value in given.items():
        if key == "errors":
            kwargs["refusals"] = [classify_reply(str(e)) for e in value]  # type: ignore[attr-defined]
        elif key == "dl":
            kwargs["dead_letter_refused"] = value
        else:
            kwargs[key] = value
    found = verdict(stage, **kwargs)  # type: ignore[arg-type]
    assert (found.action, found.reason) == (action, reason)


def test_retry_delay_is_short_capped_and_grows() -> None:
    """Retries wait 0.1 s doubling to a 5 s cap (full jitter), never claim_idle_ms."""
    refused = [Failure.RESPONSE]
    delays = [
        verdict(REFUSED, deliveries=n, max_deliveries=100, refusals=refused, rand=0.999).delay_s
        for n in (1, 2, 3, 10, 50)
    ]
    assert delays[0] < delays[1] < delays[2] <= 5.0
    assert delays[3] == pytest.approx(5.0, rel=0.01) and delays[4] == delays[3]
    assert verdict(REFUSED, deliveries=1, refusals=refused, rand=0.0).delay_s > 0


def test_kept_entries_wait_the_cap() -> None:
    """An entry that cannot be given up now waits the backoff's cap, not a short retry."""
    kept = verdict(REFUSED, deliveries=5, refusals=[RESPONSE], dead_letter_refused=True)
    again = verdict(REGIVEN, round=GIVE_UP_ROUNDS)
    assert kept.delay_s == again.delay_s == RETRY_BACKOFF.cap_s


def test_unknown_stage_is_a_bug() -> None:
    """A stage the policy does not know raises rather than guessing."""
    with pytest.raises(ValueError, match="unknown stage"):
        verdict("later")  # type: ignore[arg-type]
