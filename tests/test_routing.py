"""One routing module decides and explains: the daemon's planner and the dry run cannot disagree."""

from __future__ import annotations

import random
from typing import Any

from synapse.cli.dryrun import dry_run, event_fields
from synapse.config import RoutingTable
from synapse.plan import ROUTED, Planner
from synapse.routing import Routing, glob_miss
from tests.test_plan import NOW_MS, TableFrom, entry, table

TYPES = ["model.ready", "model.updated", "app.error", "x.y", "model.ready.v2"]
SOURCES = ["ingress", "ingress:eu1", "ingress:us"]


def random_event(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    body = {
        "model_id": "m",
        "stage": rng.choice(["production", "staging"]),
        "metrics": {"accuracy": rng.choice([0.5, 0.9, 0.99])},
    }
    return rng.choice(SOURCES), rng.choice(TYPES), body


def test_route_and_daemon_agree_on_every_event(table_from: TableFrom) -> None:
    """The planner's targets, the dry run's verdict and explain's matched routes are one answer."""
    t = table(table_from, "drop")
    planner = Planner(t)  # the daemon's, with warm caches
    rng = random.Random(11)
    for i in range(300):
        source, event_type, body = random_event(rng)
        planned = planner.plan_batch(source, [(b"%d-1" % i, entry(event_type, body))], NOW_MS)
        daemon = planned.entries[0]
        verdict = dry_run(t, source, event_fields(t, event_type=event_type, body=body))
        matched = [e for e in verdict.routes if e["matched"]]
        explained: dict[str, str] = {}
        for e in matched:
            for d in e["to"]:
                explained.setdefault(d, e["route"])  # the first route naming it, as decided
        assert daemon.routes == verdict.destinations
        assert daemon.routes == tuple(explained.items())
        assert (daemon.outcome == ROUTED) == bool(matched)
        assert all(e["why_not"] for e in verdict.routes if not e["matched"])


def test_explain_uses_the_decisions_glob_test(table_from: TableFrom) -> None:
    """A route explain calls unmatched for its glob fails glob_miss, the decision's own test."""
    t: RoutingTable = table(table_from)
    routing = Routing(t)
    for entry_ in routing.explain("ingress", "app.error", {}):
        route = next(r for r in t.routes if r.name == entry_["route"])
        miss = glob_miss(route, "ingress", "app.error")
        assert (miss is None) == any(
            r is route for r in routing.candidates("ingress", "app.error").routes
        )
        if miss is not None:
            assert entry_["why_not"] == miss and not entry_["matched"]


def test_the_table_holds_no_cache(table_from: TableFrom) -> None:
    """The table is plain data: deciding on it leaves it unchanged, caches stay with the planner."""
    t = table(table_from)
    before = {name: getattr(t, name) for name in t.__dataclass_fields__}
    planner = Planner(t)
    planner.plan_batch("ingress", [(b"1-1", entry("model.ready", {"model_id": "m"}))], NOW_MS)
    assert {name: getattr(t, name) for name in t.__dataclass_fields__} == before
    assert not any(name.startswith("_") for name in t.__dataclass_fields__)
    assert len(planner.routing._candidates) == 1 and len(Planner(t).routing._candidates) == 0
