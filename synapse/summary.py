"""What the router tells its log: a summary line on an interval, and dead letters, rate-limited.

Nothing is logged per event at INFO. Every ``interval_s`` (60 s; ``SYNAPSE_SUMMARY_INTERVAL_S``
for tests and trials) the router logs ``router_summary``: entries consumed, copies routed, dead
letters by reason, dropped, retried and reclaimed since the last summary, with each source's
lag and pending now. The counts come from the metrics, so the log and ``/metrics`` agree.

Each dead letter is logged at WARNING (``event_dead_lettered``: source, id, reason, error),
at most ``burst`` per interval; the rest are counted and reported in the next summary as
``dead_letter_logs_suppressed``, so a flood of bad input cannot flood the log.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from synapse import log as logging
from synapse.metrics import Metrics

DEFAULT_INTERVAL_S = 60.0
DEFAULT_BURST = 10
ERROR_CHARS = 300


def interval_from_env() -> float:
    """``SYNAPSE_SUMMARY_INTERVAL_S`` when set to a positive number, else 60 s."""
    raw = os.environ.get("SYNAPSE_SUMMARY_INTERVAL_S", "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def _totals(metrics: Metrics) -> dict[str, Counter[str]]:
    """Counter totals from the registry: {metric: {label value (or ""): total}}."""
    found: dict[str, Counter[str]] = {}
    for name, counter, label in (
        ("consumed", metrics.consumed, "source"),
        ("routed", metrics.routed, "destination"),
        ("dead_lettered", metrics.dead_lettered, "reason"),
        ("dropped", metrics.dropped, "reason"),
        ("retried", metrics.retried, "source"),
        ("reclaimed", metrics.reclaimed, ""),
    ):
        tally: Counter[str] = Counter()
        for family in counter.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    tally[sample.labels.get(label, "")] += int(sample.value)
        found[name] = tally
    return found


def _gauge(gauge: Any) -> dict[str, int]:
    return {s.labels["source"]: int(s.value) for family in gauge.collect() for s in family.samples}


class Summary:
    """The router's log summaries; ``tick`` is called from the loop between reads."""

    def __init__(
        self,
        metrics: Metrics,
        log: logging.Logger,
        *,
        interval_s: float | None = None,
        burst: int = DEFAULT_BURST,
        now: float = 0.0,
    ) -> None:
        self.metrics = metrics
        self.log = log
        self.interval_s = interval_s or interval_from_env()
        self.burst = burst
        self._since = now
        self._last = _totals(metrics)
        self._logged = 0  # dead letters logged in this interval
        self._suppressed = 0

    def tick(self, now: float) -> None:
        """Log the summary when the interval has passed."""
        if now - self._since >= self.interval_s:
            self.emit(now)

    def emit(self, now: float) -> None:
        totals = _totals(self.metrics)
        delta = {k: +(totals[k] - self._last.get(k, Counter())) for k in totals}
        self.log.info(
            "router_summary",
            interval_s=round(now - self._since, 1),
            consumed=delta["consumed"].total(),
            routed=delta["routed"].total(),
            dead_lettered=delta["dead_lettered"].total(),
            dead_lettered_by_reason=dict(sorted(delta["dead_lettered"].items())),
            dropped=delta["dropped"].total(),
            retried=delta["retried"].total(),
            reclaimed=delta["reclaimed"].total(),
            lag=_gauge(self.metrics.lag),
            pending=_gauge(self.metrics.pending),
            dead_letter_logs_suppressed=self._suppressed,
        )
        self._last, self._since = totals, now
        self._logged = self._suppressed = 0

    def dead_letter(self, source: str, entry_id: bytes, reason: str, error: str) -> None:
        """One dead letter: a WARNING line, unless ``burst`` were logged in this interval."""
        if self._logged >= self.burst:
            self._suppressed += 1
            return
        self._logged += 1
        self.log.warning(
            "event_dead_lettered",
            source=source,
            id=entry_id.decode(),
            reason=reason,
            error=error[:ERROR_CHARS],
        )
