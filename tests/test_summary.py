"""The router's log: a router_summary line per interval with what happened in it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
import structlog
from structlog.testing import capture_logs

from synapse.config import RoutingTable
from synapse.metrics import Metrics
from synapse.summary import Summary, interval_from_env
from tests.conftest import running, wait_for

TABLE = """
    version: 1
    router: {block_ms: 50, claim_idle_ms: 60000}
    sources: [ingress]
    routes:
      - {name: all, match: "ev.*", to: [out-a, out-b]}
"""


def summaries(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in logs if line["event"] == "router_summary"]


async def test_summary_line_counts_the_interval(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """Each interval logs consumed, routed, dead letters by reason, reclaimed, lag, pending."""
    with capture_logs() as logs:
        async with running(table_from(TABLE), url, summary_interval_s=0.2) as router:
            for n in range(3):
                r.xadd("ingress", {"type": "ev.a", "data": f'{{"n": {n}}}'})
            r.xadd("ingress", {"type": "ev.a", "data": "{not json"})
            r.xadd("ingress", {"type": "other.x", "data": "{}"})
            await wait_for(lambda: r.xlen("synapse:dlq") == 2, what="two dead letters")
            await wait_for(
                lambda: sum(s["consumed"] for s in summaries(logs)) == 5, what="summaries"
            )
            assert router.ready
    lines = summaries(logs)
    assert all(line["log_level"] == "info" for line in lines)
    assert sum(s["routed"] for s in lines) == 6  # three events, two copies each
    by_reason: dict[str, int] = {}
    for line in lines:
        for reason, n in line["dead_lettered_by_reason"].items():
            by_reason[reason] = by_reason.get(reason, 0) + n
    assert by_reason == {"invalid_json": 1, "no_route": 1}
    last = lines[-1]
    assert last["lag"] == {"ingress": 0} and last["pending"] == {"ingress": 0}
    assert {"reclaimed", "retried", "dropped", "interval_s"} <= last.keys()


def test_summary_waits_for_its_interval() -> None:
    """tick logs nothing before the interval has passed, then one line."""
    metrics = Metrics()
    with capture_logs() as logs:
        summary = Summary(metrics, structlog.get_logger(), interval_s=60, now=100.0)
        summary.tick(159.0)
        assert summaries(logs) == []
        metrics.consumed.labels("ingress").inc(7)
        summary.tick(160.0)
    [line] = summaries(logs)
    assert line["consumed"] == 7 and line["interval_s"] == 60.0


def test_dead_letter_warnings_are_rate_limited() -> None:
    """At most ``burst`` dead letters are logged per interval; the rest are counted."""
    with capture_logs() as logs:
        summary = Summary(Metrics(), structlog.get_logger(), interval_s=60, burst=3, now=0.0)
        for n in range(10):
            summary.dead_letter("ingress", f"{n}-0".encode(), "schema_violation", "x" * 1000)
        summary.tick(61.0)
        summary.dead_letter("ingress", b"11-0", "no_route", "no route")
    warnings = [line for line in logs if line["event"] == "event_dead_lettered"]
    assert [w["id"] for w in warnings] == ["0-0", "1-0", "2-0", "11-0"]
    assert all(w["log_level"] == "warning" for w in warnings)
    assert len(warnings[0]["error"]) == 300
    [line] = summaries(logs)
    assert line["dead_letter_logs_suppressed"] == 7


def test_interval_from_env(monkeypatch: Any) -> None:
    """SYNAPSE_SUMMARY_INTERVAL_S sets the interval; garbage or <= 0 means the 60 s default."""
    monkeypatch.setenv("SYNAPSE_SUMMARY_INTERVAL_S", "0.5")
    assert interval_from_env() == 0.5
    for bad in ("x", "0", "-1"):
        monkeypatch.setenv("SYNAPSE_SUMMARY_INTERVAL_S", bad)
        assert interval_from_env() == 60.0


async def test_consuming_service_groups_are_measured(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """A service's group on a destination gets lag and pending gauges; a deleted group loses
    them. Route and dead-letter series exist at 0 before the first event (alerts see it)."""
    r.xgroup_create("out-a", "svc", id="0", mkstream=True)
    table = table_from(TABLE)
    async with running(table, url) as router:
        metrics = router.metrics
        registry = metrics.registry
        assert (
            registry.get_sample_value(
                "synapse_events_routed_total", {"route": "all", "destination": "out-b"}
            )
            == 0
        )
        assert (
            registry.get_sample_value(
                "synapse_events_dead_lettered_total", {"reason": "max_deliveries"}
            )
            == 0
        )
        for n in range(3):
            r.xadd("ingress", {"type": "ev.a", "data": f'{{"n": {n}}}'})
        await wait_for(lambda: r.xlen("out-a") == 3, what="three copies")
        r.xreadgroup("svc", "c1", {"out-a": ">"}, count=1)

        def gauge(name: str) -> float | None:
            return registry.get_sample_value(name, {"stream": "out-a", "group": "svc"})

        async def seen() -> bool:
            await router.refresh_stats()
            return gauge("synapse_consumer_group_lag") == 2

        await wait_for(seen, what="the service group's lag")
        assert gauge("synapse_consumer_group_pending") == 1
        r.xgroup_destroy("out-a", "svc")
        await router.refresh_stats()
        assert gauge("synapse_consumer_group_lag") is None


async def test_each_dead_letter_is_a_warning_up_to_the_burst(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """A routed-loop dead letter logs event_dead_lettered at WARNING with its reason and id;
    past the burst the rest are counted in the summary, not logged."""
    with capture_logs() as logs:
        async with running(table_from(TABLE), url, summary_interval_s=3600) as router:
            router.summary.burst = 2
            ids = [r.xadd("ingress", {"type": "ev.a", "data": "{bad"}) for _ in range(5)]
            await wait_for(lambda: r.xlen("synapse:dlq") == 5, what="five dead letters")
    warnings = [line for line in logs if line["event"] == "event_dead_lettered"]
    assert [w["id"] for w in warnings] == [i.decode() for i in ids[:2]]
    assert all(w["log_level"] == "warning" and w["reason"] == "invalid_json" for w in warnings)
    assert all(w["source"] == "ingress" and w["error"] for w in warnings)
    [final] = summaries(logs)  # the one at stop
    assert final["dead_letter_logs_suppressed"] == 3 and final["dead_lettered"] == 5


async def test_a_given_up_destination_is_a_dead_letter_warning(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """An entry given up on a refusing destination logs event_dead_lettered (destination_error)
    naming the destination and its error."""
    r.set("out-b", "not a stream")  # WRONGTYPE on every XADD
    table = table_from(
        TABLE.replace("claim_idle_ms: 60000", "claim_idle_ms: 60000, max_deliveries: 1")
    )
    with capture_logs() as logs:
        async with running(table, url, summary_interval_s=3600):
            entry_id = r.xadd("ingress", {"type": "ev.a", "data": '{"n": 1}'})
            await wait_for(lambda: r.xlen("synapse:dlq") == 1, what="the dead letter")
    [warning] = [line for line in logs if line["event"] == "event_dead_lettered"]
    assert warning["id"] == entry_id.decode() and warning["reason"] == "destination_error"
    assert warning["error"].startswith("out-b: ") and "not a stream" in warning["error"]
