"""The real daemon logs router_summary on its interval (SYNAPSE_SUMMARY_INTERVAL_S)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import redis

from tests.conftest import wait_sync, write_table
from tests.ops.test_reload import EV_SCHEMA, TABLE_A
from tests.support.router import RouterProcess


def test_daemon_logs_summaries_and_dead_letters(
    tmp_path: Path, spawn: Callable[..., RouterProcess], r: redis.Redis
) -> None:
    """A subprocess router logs router_summary (JSON) with the interval's counts, and a
    dead letter as event_dead_lettered at warning."""
    config = write_table(tmp_path / "cfg", TABLE_A, {"ev.json": EV_SCHEMA})
    router = spawn(config, env={"SYNAPSE_SUMMARY_INTERVAL_S": "0.5"})
    router.wait_ready()
    r.xadd("ingress", {"type": "ev.ok", "data": json.dumps({"n": 1})})
    bad = r.xadd("ingress", {"type": "ev.bad", "data": json.dumps({"n": "x"})})
    warning = router.wait_log("event_dead_lettered")
    assert warning["level"] == "warning" and warning["id"] == bad.decode()
    assert warning["reason"] == "schema_violation"
    wait_sync(
        lambda: sum(s["consumed"] for s in router.events("router_summary")) == 2, 15, "summaries"
    )
    summaries = router.events("router_summary")
    assert all(s["level"] == "info" for s in summaries)
    assert sum(s["routed"] for s in summaries) == 2  # one valid event, two destinations
    assert sum(s["dead_lettered"] for s in summaries) == 1
    assert any(s["dead_lettered_by_reason"] == {"schema_violation": 1} for s in summaries)
    assert router.stop() == 0
