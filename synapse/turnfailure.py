"""A failed turn of the router's loop: counted, logged, and answered by its kind.

Store errors never end the loop (``consumer.Router.run``): a turn that raised is
classified by the backend, ``retry.verdict`` says what it means (``RAISED``), and
``TurnFailures.answer`` carries that out and tells the loop what to do next. The
loop always sets up again before it reads.

- A missing group (NOGROUP): set up again at once, then with backoff while it keeps
  missing. Counted as ``no_group``, logged ``group_missing``; the router stays ready.
- A lost connection, a timeout, a server-wide refusal (OOM, READONLY, LOADING,
  BUSY...) or an ACL refusal is an outage: the re-read of our pending entries that
  follows does not count as a delivery. Anything else may have come from an entry,
  so that re-read counts (an entry that breaks the commit is bounded by
  ``max_deliveries``); a bug is also logged with its traceback (``router_error``).
  Either way the router is not ready (``synapse_ready`` and ``synapse_redis_up`` 0)
  until its next set-up, the failure is counted in ``synapse_redis_errors_total``
  by kind, ``redis_unavailable`` is logged when the router was ready or at the
  first failure of a run (not at every retry), and the next try waits the
  backoff's delay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from synapse.backoff import Backoff
from synapse.errors import Failure
from synapse.metrics import Metrics
from synapse.retry import OUTAGE, RAISED, REDELIVER, SETUP, Action, verdict


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """What the loop does after a failed turn, besides setting up again."""

    delay_s: float  # wait this long (or until stopped) before the next try
    down: bool  # not ready until the next set-up
    recount: bool  # the next re-read of our own pending entries counts as a delivery


class TurnFailures:
    """Answers the router's failed turns (its metrics, its log, its backoff)."""

    def __init__(self, metrics: Metrics, log: Any, backoff: Backoff) -> None:
        self.metrics = metrics
        self.log = log
        self.backoff = backoff

    def answer(
        self,
        exc: BaseException,
        failure: Failure,
        attempt: int,
        *,
        ready: bool,
        group: str,
        backend: str,
    ) -> Answer:
        """The answer to the ``attempt``-th failed turn in a row, raised as ``exc`` of kind
        ``failure``; ``ready``: whether the router was ready when it failed. Call it from
        the ``except`` block (a bug's traceback is logged from there)."""
        judged = verdict(RAISED, failure=failure)
        if judged.action == SETUP:
            self.metrics.redis_errors.labels(Failure.NO_GROUP).inc()
            self.log.warning("group_missing", error=str(exc), group=group)
            delay_s = self.backoff.delay_s(attempt) if attempt > 1 else 0
            return Answer(delay_s=delay_s, down=False, recount=False)
        if failure == Failure.INTERNAL:  # a bug must not stop routing for good
            self.log.exception("router_error", error=repr(exc), attempt=attempt)
        kind = label(failure, judged.action)
        self.metrics.redis_errors.labels(kind).inc()
        if ready or attempt == 1:
            self.log.warning(  # the event's name is stable: the store, whichever it is
                "redis_unavailable", kind=kind, error=str(exc), attempt=attempt, backend=backend
            )
        self.metrics.redis_up.set(0)
        self.metrics.ready.set(0)
        return Answer(
            delay_s=self.backoff.delay_s(attempt), down=True, recount=judged.action == REDELIVER
        )


def label(failure: Failure, action: Action) -> str:
    """The ``kind`` of ``synapse_redis_errors_total`` for a failed turn."""
    if failure in (Failure.CONNECTION, Failure.INTERNAL):
        return failure
    return Failure.OUTAGE if action == OUTAGE else Failure.RESPONSE
