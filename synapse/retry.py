"""What to do with an entry that was delivered, or refused: one pure function.

Every retry decision of the router comes from ``verdict`` (no I/O, no clock, no
state): the planner asks it before an entry is tried (``DELIVERED``), the batch
handler after a destination refused the entry's write (``REFUSED``), and the
loop after a whole commit or read raised (``RAISED``). The attempt count it is
given is Redis's: the delivery counter in the group's pending list, which a
delivery (``XREADGROUP``, ``XCLAIM``, ``XAUTOCLAIM``) increments and a re-read
of our own pending list after an outage does not (``pending.py``).

- An entry is tried at most ``max_deliveries`` times. Delivered more often than
  that without being committed (the router kept dying on it): give up with
  ``max_deliveries``. Refused on its last attempt: give up with
  ``destination_error`` (the writable copies are written, one dead letter per
  refused destination).
- A refusal that is the server's, not the destination's (OOM, READONLY, LOADING,
  BUSY, MASTERDOWN, ...), is an outage: back off, report not ready, never
  dead-letter for it, and do not count the re-read that follows.
- Otherwise retry the refused entry after a short capped backoff with jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

from synapse.backoff import Backoff

#: Error codes that mean the server as a whole refuses writes for now.
OUTAGE_CODES = frozenset(
    {
        "OOM",
        "READONLY",
        "LOADING",
        "BUSY",
        "MASTERDOWN",
        "NOREPLICAS",
        "MISCONF",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "NOTBUSY",
        "UNBLOCKED",
    }
)

#: The stages ``verdict`` is asked at.
DELIVERED = "delivered"  # read (new, reclaimed or retried): about to be planned
REFUSED = "refused"  # a destination refused one of its writes in the commit
RAISED = "raised"  # a whole commit or read raised (``error``: its text)

#: The answers.
PROCESS = "process"  # plan and commit it
RETRY = "retry"  # leave it pending; try again after ``delay_s``
GIVE_UP = "give_up"  # dead-letter it (``reason``)
OUTAGE = "outage"  # back off, not ready; the re-read that follows does not count
REDELIVER = "redeliver"  # back off; the re-read that follows counts as a delivery

#: Retries of a refused entry: 0.1 s doubling to 5 s, with full jitter.
RETRY_BACKOFF = Backoff(base_s=0.1, cap_s=5.0)


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str
    reason: str | None = None
    delay_s: float = 0.0


_PROCESS = Verdict(PROCESS)
_OUTAGE = Verdict(OUTAGE)
_REDELIVER = Verdict(REDELIVER)


def error_text(exc: BaseException) -> str:
    """A Redis error as the server sent it: redis-py strips the code (``OOM``, ``READONLY``)
    from the message and keeps it in ``status_code``."""
    code = getattr(exc, "status_code", None)
    text = str(exc)
    return f"{code} {text}" if code and not text.startswith(str(code)) else text


def is_outage(error: str) -> bool:
    """Whether a Redis error text is a server-wide refusal (its first word is the code)."""
    code = error.lstrip("-").split(" ", 1)[0].split(":", 1)[0]
    return code in OUTAGE_CODES


def verdict(
    stage: str,
    *,
    deliveries: int = 1,
    max_deliveries: int = 5,
    error: str = "",
    connection: bool = False,
    backoff: Backoff = RETRY_BACKOFF,
    rand: float | None = None,
) -> Verdict:
    """The verdict on an entry (or, at ``RAISED``, on the entries in flight).

    ``deliveries`` is Redis's delivery count of the entry, this delivery included;
    ``error`` the refusal's or the exception's text; ``connection`` whether the
    exception was a lost connection or a timeout; ``rand`` picks the jitter.
    """
    if stage == DELIVERED:
        if deliveries > max_deliveries:
            return Verdict(GIVE_UP, "max_deliveries")
        return _PROCESS
    if stage == REFUSED:
        if is_outage(error):
            return _OUTAGE
        if deliveries >= max_deliveries:
            return Verdict(GIVE_UP, "destination_error")
        return Verdict(RETRY, delay_s=backoff.delay_s(deliveries, rand))
    if stage == RAISED:
        if connection or is_outage(error) or error.startswith("NOPERM"):
            return _OUTAGE
        return _REDELIVER  # a bug or an entry that breaks the commit: bounded by the count
    raise ValueError(f"unknown stage {stage!r}")
