"""A failed turn of the router's loop: counted by kind, logged once per outage, answered."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

from synapse.backoff import Backoff
from synapse.errors import Failure
from synapse.metrics import Metrics
from synapse.turnfailure import TurnFailures

#: A backoff whose every delay is in [0.2, 2] s (full jitter over a 2 s window).
FIXED = Backoff(base_s=2.0, cap_s=2.0)


def failures() -> tuple[TurnFailures, Metrics]:
    metrics = Metrics()
    return TurnFailures(metrics, structlog.get_logger(), FIXED), metrics


def errors(metrics: Metrics, kind: str) -> float:
    value = metrics.registry.get_sample_value("synapse_redis_errors_total", {"kind": kind})
    return value or 0.0


def test_a_missing_group_sets_up_again_at_once_and_stays_ready() -> None:
    """NOGROUP: no wait on the first try, counted as nogroup, group_missing, not down."""
    turns, metrics = failures()
    metrics.ready.set(1)
    with capture_logs() as logs:
        first = turns.answer(
            RuntimeError("NOGROUP"), Failure.NO_GROUP, 1, ready=True, group="g", backend="redis"
        )
        again = turns.answer(
            RuntimeError("NOGROUP"), Failure.NO_GROUP, 2, ready=True, group="g", backend="redis"
        )
    assert first.delay_s == 0 and not first.down and not first.recount
    assert again.delay_s > 0
    assert errors(metrics, "nogroup") == 2
    assert [line["event"] for line in logs] == ["group_missing", "group_missing"]
    assert metrics.registry.get_sample_value("synapse_ready") == 1


def test_an_outage_marks_the_router_down_and_does_not_count_the_reread() -> None:
    """A lost connection: down, backoff delay, redis_unavailable once, not at every retry."""
    turns, metrics = failures()
    metrics.ready.set(1)
    metrics.redis_up.set(1)
    with capture_logs() as logs:
        first = turns.answer(
            ConnectionError("gone"), Failure.CONNECTION, 1, ready=True, group="g", backend="redis"
        )
        second = turns.answer(
            ConnectionError("gone"), Failure.CONNECTION, 2, ready=False, group="g", backend="redis"
        )
    assert first.down and not first.recount and 0.2 <= first.delay_s <= 2.0  # jittered
    assert second.down and not second.recount
    assert [(line["event"], line["kind"]) for line in logs] == [("redis_unavailable", "connection")]
    assert errors(metrics, "connection") == 2
    assert metrics.registry.get_sample_value("synapse_ready") == 0
    assert metrics.registry.get_sample_value("synapse_redis_up") == 0


def test_a_server_wide_refusal_is_counted_as_an_outage() -> None:
    """OOM/READONLY (Failure.OUTAGE) and ACL refusals are counted as outage, not response."""
    turns, metrics = failures()
    turns.answer(RuntimeError("OOM"), Failure.OUTAGE, 1, ready=True, group="g", backend="redis")
    turns.answer(
        RuntimeError("NOPERM"), Failure.NO_PERMISSION, 1, ready=False, group="g", backend="redis"
    )
    assert errors(metrics, "outage") == 2 and errors(metrics, "response") == 0


def test_a_bug_is_logged_with_its_traceback_and_the_reread_counts() -> None:
    """An internal error: router_error with the exception, down, the next re-read counts."""
    turns, metrics = failures()
    with capture_logs() as logs:
        try:
            raise KeyError("bug")
        except KeyError as exc:
            answer = turns.answer(exc, Failure.INTERNAL, 1, ready=True, group="g", backend="redis")
    assert answer.down and answer.recount
    events = [line["event"] for line in logs]
    assert events == ["router_error", "redis_unavailable"]
    assert logs[0]["exc_info"] is True and logs[0]["log_level"] == "error"
    assert errors(metrics, "internal") == 1


def test_an_error_reply_from_an_entry_counts_the_reread() -> None:
    """Any other error reply (WRONGTYPE...): counted as response, the re-read counts."""
    turns, metrics = failures()
    answer = turns.answer(
        RuntimeError("WRONGTYPE"), Failure.RESPONSE, 1, ready=True, group="g", backend="redis"
    )
    assert answer.down and answer.recount
    assert errors(metrics, "response") == 1
