"""What to do with an entry that was delivered, or refused: one pure function.

Every retry decision of the router comes from ``verdict`` (no I/O, no clock, no
state): the planner asks it before an entry is tried (``DELIVERED``), the batch
handler after destinations refused the entry's writes (``REFUSED``), and the
loop after a whole commit or read raised (``RAISED``). The attempt count it is
given is Redis's: the delivery counter in the group's pending list, which a
delivery (``XREADGROUP``, ``XCLAIM``, ``XAUTOCLAIM``) increments and a re-read
of our own pending list after an outage does not (``pending.py``). What kind of
failure a refusal or an exception is comes from ``errors.classify_reply`` and
``failures.classify``.

- An entry is tried at most ``max_deliveries`` times. Delivered more often than
  that without being committed (the router kept dying on it): give up with
  ``max_deliveries``. Refused on its last attempt: give up with
  ``destination_error`` (the writable copies are written, one dead letter per
  refused destination) -- unless the dead-letter stream is among the refusers:
  then it is kept pending and retried at the backoff's cap. A give-up commit that
  is refused again is re-planned with the new refusers, a few rounds at most,
  then kept and retried at the cap.
- A refusal that is the server's, not the destination's (OOM, READONLY, LOADING,
  BUSY, MASTERDOWN, ...), is an outage: back off, report not ready, never
  dead-letter for it, and do not count the re-read that follows.
- Otherwise retry the refused entry after a short capped backoff with jitter.
- A whole commit or read that raised: a lost connection, an outage or an ACL
  refusal is an outage; a missing group is set up again; anything else is
  redelivered (the re-read counts, so an entry that breaks the commit is bounded).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from synapse.backoff import Backoff
from synapse.errors import Failure, Reason


class Stage(StrEnum):
    """Where ``verdict`` is asked."""

    DELIVERED = "delivered"  # read (new, reclaimed or retried): about to be planned
    REFUSED = "refused"  # destinations refused some of its writes in the commit
    RAISED = "raised"  # a whole commit or read raised (``failure``: its kind)
    REGIVEN = "regiven"  # a give-up commit was refused again (``round``: how many so far)


class Action(StrEnum):
    """The answers."""

    PROCESS = "process"  # plan and commit it
    RETRY = "retry"  # leave it pending; try again after ``delay_s``
    GIVE_UP = "give_up"  # dead-letter it (``reason``)
    OUTAGE = "outage"  # back off, not ready; the re-read that follows does not count
    REDELIVER = "redeliver"  # back off; the re-read that follows counts as a delivery
    SETUP = "setup"  # the group is gone: create it again, then read


DELIVERED, REFUSED, RAISED, REGIVEN = Stage.DELIVERED, Stage.REFUSED, Stage.RAISED, Stage.REGIVEN
PROCESS, RETRY, GIVE_UP = Action.PROCESS, Action.RETRY, Action.GIVE_UP
OUTAGE, REDELIVER, SETUP = Action.OUTAGE, Action.REDELIVER, Action.SETUP

#: Retries of a refused entry: 0.1 s doubling to 5 s, with full jitter.
RETRY_BACKOFF = Backoff(base_s=0.1, cap_s=5.0)
#: Give-up commits of one batch: each round only adds refused destinations, so a few at most.
GIVE_UP_ROUNDS = 4

#: Failures of a whole commit or read that are not the entries' fault.
_NOT_THE_ENTRIES = frozenset({Failure.CONNECTION, Failure.OUTAGE, Failure.NO_PERMISSION})


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: Reason | None = None
    delay_s: float = 0.0


_PROCESS = Verdict(PROCESS)
_OUTAGE = Verdict(OUTAGE)
_REDELIVER = Verdict(REDELIVER)
_SETUP = Verdict(SETUP)


def verdict(
    stage: Stage,
    *,
    deliveries: int = 1,
    max_deliveries: int = 5,
    refusals: Collection[Failure] = (),
    dead_letter_refused: bool = False,
    failure: Failure = Failure.INTERNAL,
    round: int = 1,
    backoff: Backoff = RETRY_BACKOFF,
    rand: float | None = None,
) -> Verdict:
    """The verdict on an entry (or, at ``RAISED``, on the entries in flight).

    ``deliveries`` is Redis's delivery count of the entry, this delivery included.
    At ``REFUSED``: ``refusals`` names each refused destination's failure and
    ``dead_letter_refused`` says whether the dead-letter stream is one of them.
    At ``RAISED``: ``failure`` is the exception's kind. At ``REGIVEN``: ``round`` give-up
    commits of the batch ran and the entry was refused in the last. ``rand`` picks the jitter.
    """
    if stage == DELIVERED:
        if deliveries > max_deliveries:
            return Verdict(GIVE_UP, Reason.MAX_DELIVERIES)
        return _PROCESS
    if stage == REFUSED:
        if Failure.OUTAGE in refusals:
            return _OUTAGE
        if deliveries >= max_deliveries:
            if dead_letter_refused:  # nowhere to give it up to: kept, retried slowly
                return Verdict(RETRY, delay_s=backoff.cap_s)
            return Verdict(GIVE_UP, Reason.DESTINATION_ERROR)
        return Verdict(RETRY, delay_s=backoff.delay_s(deliveries, rand))
    if stage == RAISED:
        if failure in _NOT_THE_ENTRIES:
            return _OUTAGE
        if failure == Failure.NO_GROUP:
            return _SETUP
        return _REDELIVER  # a bug or an entry that breaks the commit: bounded by the count
    if stage == REGIVEN:
        if dead_letter_refused or round >= GIVE_UP_ROUNDS:  # kept: try it again later
            return Verdict(RETRY, delay_s=backoff.cap_s)
        return Verdict(GIVE_UP, Reason.DESTINATION_ERROR)  # with the new refusers too
    raise ValueError(f"unknown stage {stage!r}")
