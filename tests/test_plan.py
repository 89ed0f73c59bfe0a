"""The pure core: batch + table -> plan (no server)."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from synapse import keys
from synapse.config import RoutingTable
from synapse.events import copy_fields, pairs
from synapse.plan import DEAD_LETTER, DELETED, DROPPED, ROUTED, EntryPlan, Planner

TableFrom = Callable[..., RoutingTable]
NOW_MS = 1_700_000_000_000

TABLE = """
    version: 1
    router: {max_deliveries: 3, unrouted: %(unrouted)s}
    sources: [ingress, "ingress:*"]
    schemas:
      "model.*": model.json
    routes:
      - name: models
        match: "model.*"
        to: [model-events, all-events]
      - name: prod
        match: model.ready
        where: {stage: production, metrics.accuracy: {gte: 0.9}}
        to: [platform-events, model-events]
      - name: eu-only
        match: {type: "model.*", source: "ingress:eu*"}
        to: [eu-events]
      - name: any-source-errors
        match: {source: "ingress:*"}
        to: [from-shards]
      - name: errors
        match: "*.error"
        to: error-events
    retention:
      "*-events": {maxlen: 1000}
      "model-events": {maxlen: 5}
      "synapse:dlq": {maxlen: 77}
"""
MODEL_SCHEMA = {
    "type": "object",
    "required": ["model_id"],
    "properties": {"model_id": {"type": "string"}},
}


def table(table_from: TableFrom, unrouted: str = "dead-letter", **extra: Any) -> RoutingTable:
    text = TABLE % {"unrouted": unrouted}
    if extra:
        text = text.replace(
            "router: {", "router: {" + ", ".join(f"{k}: {v}" for k, v in extra.items()) + ", "
        )
    return table_from(text, {"model.json": MODEL_SCHEMA})


def entry(event_type: str | None = None, body: Any = None, **fields: bytes | str) -> list[bytes]:
    out: list[bytes] = []
    if event_type is not None:
        out += (b"type", event_type.encode())
    if body is not None:
        out += (b"data", json.dumps(body).encode())
    for name, value in fields.items():
        out += (name.encode(), value if isinstance(value, bytes) else value.encode())
    return out


def plan_one(
    planner: Planner, fields: list[bytes] | None, source: str = "ingress", deliveries: int = 1
) -> EntryPlan:
    batch = planner.plan_batch(source, [(b"1-1", fields)], NOW_MS, {b"1-1": deliveries})
    [planned] = batch.entries
    assert batch.source == source
    return planned


def test_fan_out_union_each_destination_once(table_from: TableFrom) -> None:
    """All matching routes' destinations, each once, named by the first route listing it."""
    planner = Planner(table(table_from))
    body = {"model_id": "m", "stage": "production", "metrics": {"accuracy": 0.95}}
    planned = plan_one(planner, entry("model.ready", body))
    assert planned.outcome == ROUTED
    assert planned.routes == (
        ("model-events", "models"),
        ("all-events", "models"),
        ("platform-events", "prod"),
    )
    assert [w.stream for w in planned.writes] == ["model-events", "all-events", "platform-events"]
    assert planned.event_type == "model.ready"


def test_where_filter_narrows_fan_out(table_from: TableFrom) -> None:
    """A route whose where fails adds nothing; the others still apply."""
    planner = Planner(table(table_from))
    body = {"model_id": "m", "stage": "production", "metrics": {"accuracy": 0.5}}
    planned = plan_one(planner, entry("model.ready", body))
    assert [d for d, _ in planned.routes] == ["model-events", "all-events"]


def test_match_on_type_and_source(table_from: TableFrom) -> None:
    """match {type, source} needs both; match {source} alone takes every type."""
    planner = Planner(table(table_from))
    fields = entry("model.updated", {"model_id": "m"})
    assert [d for d, _ in plan_one(planner, fields, "ingress").routes] == [
        "model-events",
        "all-events",
    ]
    assert [d for d, _ in plan_one(planner, fields, "ingress:eu-west").routes] == [
        "model-events",
        "all-events",
        "eu-events",
        "from-shards",
    ]
    assert [d for d, _ in plan_one(planner, fields, "ingress:us").routes] == [
        "model-events",
        "all-events",
        "from-shards",
    ]
    other = plan_one(planner, entry("app.started", {}), "ingress:us")
    assert other.routes == (("from-shards", "any-source-errors"),)


def test_provenance_and_byte_for_byte_copies(table_from: TableFrom) -> None:
    """Each copy is the source fields byte for byte (binary, duplicates), plus provenance."""
    # Binary fields need a `data` field: without one the fields are the body and must be UTF-8.
    planner = Planner(table(table_from))
    fields = [
        b"type",
        b"app.error",
        b"data",
        b"{}",
        b"blob",
        bytes(range(256)),
        b"dup",
        b"1",
        b"dup",
        b"2",
        b"empty",
        b"",
    ]
    planned = plan_one(planner, fields, "ingress")
    [write] = planned.writes
    assert write.stream == "error-events"
    assert write.fields[: len(fields)] == fields
    assert write.fields[len(fields) :] == [
        b"synapse-source",
        b"ingress",
        b"synapse-id",
        b"1-1",
        b"synapse-route",
        b"errors",
    ]


def test_provenance_off(table_from: TableFrom) -> None:
    """provenance: false writes the source fields exactly, nothing added."""
    planner = Planner(table(table_from, provenance="false"))
    fields = entry("app.error", {}, msg=b"\xff")
    [write] = plan_one(planner, fields).writes
    assert write.fields == fields


def test_retention_maxlen_by_first_matching_glob(table_from: TableFrom) -> None:
    """Each write carries the maxlen of the first retention glob matching its stream."""
    t = table(table_from)
    planner = Planner(t)
    body = {"model_id": "m", "stage": "production", "metrics": {"accuracy": 0.95}}
    planned = plan_one(planner, entry("model.ready", body))
    assert {w.stream: w.maxlen for w in planned.writes} == {
        "model-events": 1000,  # "*-events" comes first in the file
        "all-events": 1000,
        "platform-events": 1000,
    }
    assert planner.routing.maxlen_for("other") is None
    assert planner.routing.maxlen_for("other") is None  # cached answer is the same
    [dlq] = plan_one(planner, entry(None, {"model_id": "m"})).writes
    assert (dlq.stream, dlq.maxlen) == ("synapse:dlq", 77)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (entry("model.ready", None, data="{x"), "invalid_json"),
        (entry("model.ready", None, data=b'{"model_id": "\xff"}'), "invalid_encoding"),
        (entry(None, {"model_id": "m"}), "missing_type"),
        (entry("model.ready", {"model_id": 5}), "schema_violation"),
        (entry("nothing.here", {}), "no_route"),
        (entry("app.error", None, data="[" * 100 + "]" * 100), "too_deep"),
        (entry("app.error", None, data="x" * (1 << 20)), "too_large"),
    ],
)
def test_bad_input_dead_lettered_with_reason(
    table_from: TableFrom, fields: list[bytes], reason: str
) -> None:
    """Every bad-input class becomes one dead-letter write with its reason and the fields."""
    t = table(table_from)
    planned = plan_one(Planner(t), fields)
    assert planned.outcome == DEAD_LETTER
    assert planned.reason == reason
    assert planned.error
    [write] = planned.writes
    assert write.stream == "synapse:dlq"
    got = pairs(write.fields)
    assert got[b"synapse-reason"] == reason.encode()
    assert got[b"synapse-config"] == t.hash.encode()
    assert got[b"synapse-deliveries"] == b"1"
    assert got[b"synapse-id"] == b"1-1"
    assert got[b"synapse-source"] == b"ingress"
    assert got[b"synapse-time"] == b"2023-11-14T22:13:20.000Z"
    for name, value in pairs(fields).items():
        if len(value) <= 4096:
            assert got[name] == value


def test_schema_violation_error_is_readable(table_from: TableFrom) -> None:
    """A schema violation names the schema file and the failing path."""
    planned = plan_one(Planner(table(table_from)), entry("model.ready", {"model_id": 5}))
    assert planned.error is not None
    assert planned.error.startswith("model.json: at /model_id:")


def test_unknown_schema_with_require_schema(table_from: TableFrom) -> None:
    """require_schema: true dead-letters types no schema covers; covered types pass."""
    planner = Planner(table(table_from, require_schema="true"))
    assert plan_one(planner, entry("app.error", {})).reason == "unknown_schema"
    assert plan_one(planner, entry("model.ready", {"model_id": "m"})).outcome == ROUTED
    relaxed = Planner(table(table_from))
    assert plan_one(relaxed, entry("app.error", {})).outcome == ROUTED


def test_unrouted_drop(table_from: TableFrom) -> None:
    """unrouted: drop acknowledges the entry with no write."""
    planned = plan_one(Planner(table(table_from, "drop")), entry("nothing.here", {}))
    assert (planned.outcome, planned.writes, planned.reason) == (DROPPED, (), "no_route")


def test_unrouted_to_a_stream(table_from: TableFrom) -> None:
    """unrouted: <stream> copies the entry there with provenance route `unrouted`."""
    planned = plan_one(Planner(table(table_from, "leftovers")), entry("nothing.here", {}))
    assert planned.outcome == ROUTED
    [write] = planned.writes
    assert write.stream == "leftovers"
    assert pairs(write.fields)[b"synapse-route"] == b"unrouted"
    assert planned.routes == (("leftovers", "unrouted"),)


def test_unrouted_dead_letter(table_from: TableFrom) -> None:
    """unrouted: dead-letter writes a no_route dead letter naming the type."""
    planned = plan_one(Planner(table(table_from)), entry("nothing.here", {}))
    assert planned.outcome == DEAD_LETTER and planned.reason == "no_route"
    assert planned.error is not None and "nothing.here" in planned.error


def test_max_deliveries(table_from: TableFrom) -> None:
    """An entry delivered more than max_deliveries times is dead-lettered, even if valid."""
    planner = Planner(table(table_from))  # max_deliveries: 3
    good = entry("model.updated", {"model_id": "m"})
    assert plan_one(planner, good, deliveries=3).outcome == ROUTED
    planned = plan_one(planner, good, deliveries=4)
    assert planned.outcome == DEAD_LETTER and planned.reason == "max_deliveries"
    got = pairs(planned.writes[0].fields)
    assert got[b"synapse-deliveries"] == b"4"
    assert got[b"synapse-reason"] == b"max_deliveries"
    assert got[b"data"] == b'{"model_id": "m"}'


def test_deleted_entry(table_from: TableFrom) -> None:
    """An entry deleted from the source (no fields) is only acknowledged."""
    planned = plan_one(Planner(table(table_from)), None)
    assert (planned.outcome, planned.writes) == (DELETED, ())


def test_one_bad_entry_does_not_touch_the_rest(table_from: TableFrom) -> None:
    """A batch plans each entry on its own; the bad one does not change the others."""
    planner = Planner(table(table_from))
    good = entry("app.error", {})
    batch = planner.plan_batch(
        "ingress",
        [(b"1-1", good), (b"1-2", entry("app.error", None, data="{")), (b"1-3", good)],
        NOW_MS,
    )
    assert [p.outcome for p in batch.entries] == [ROUTED, DEAD_LETTER, ROUTED]
    assert [p.entry_id for p in batch.entries] == [b"1-1", b"1-2", b"1-3"]
    assert batch.entries[0].writes[0].fields[:-6] == good


def reference_routes(t: RoutingTable, source: str, event_type: str, body: Any) -> list[str]:
    """Destinations computed the slow, obvious way, for comparison with the cached path."""
    out: list[str] = []
    for route in t.routes:
        if not route.matches_type(event_type):
            continue
        if route.matches_source is not None and not route.matches_source(source):
            continue
        if route.where is not None and not route.where.holds(body):
            continue
        out += [d for d in route.to if d not in out]
    return out


def test_decision_cache_matches_uncached(table_from: TableFrom) -> None:
    """Cached (source, type) decisions give the same destinations as evaluating every route."""
    t = table(table_from, "drop")
    planner = Planner(t)
    rng = random.Random(7)
    types = ["model.ready", "model.updated", "app.error", "x.y", "model.ready.v2"]
    sources = ["ingress", "ingress:eu1", "ingress:us"]
    for i in range(400):
        source, event_type = rng.choice(sources), rng.choice(types)
        body = {
            "model_id": "m",
            "stage": rng.choice(["production", "staging"]),
            "metrics": {"accuracy": rng.choice([0.5, 0.9, 0.99])},
        }
        fields = entry(event_type, body)
        planned = planner.plan_batch(source, [(str(i).encode(), fields)], NOW_MS).entries[0]
        assert [d for d, _ in planned.routes] == reference_routes(t, source, event_type, body)
    routing = planner.routing
    assert len(routing._candidates) == len(list(itertools.product(sources, types)))
    first = routing.candidates("ingress", "model.ready")
    assert routing.candidates("ingress", "model.ready") is first  # served from the cache
    assert first.fixed is None  # a where filter reads the body: no fixed answer
    assert routing.candidates("ingress", "app.error").fixed == (("error-events", "errors"),)


def test_a_copy_is_every_source_field_then_provenance(table_from: TableFrom) -> None:
    """A planned copy: the source fields byte for byte (order, duplicates), then provenance."""
    fields = [*entry("app.error", {}), b"blob", b"\x00\xff\xfe", b"dup", b"1", b"dup", b"2"]
    [copy] = plan_one(Planner(table(table_from)), fields).writes
    assert copy.fields == copy_fields(fields, (b"ingress", b"1-1", b"errors"))
    assert copy.fields[: len(fields)] == fields
    assert copy.fields[len(fields) :] == [
        b"synapse-source",
        b"ingress",
        b"synapse-id",
        b"1-1",
        b"synapse-route",
        b"errors",
    ]


def test_provenance_replaced_when_routed_twice(table_from: TableFrom) -> None:
    """A copy of a copy (or a producer's synapse-* fields) gets new values, each name once."""
    planner = Planner(table(table_from))
    [first] = plan_one(planner, [*entry("app.error", {}), keys.F_TIME, b"forged"]).writes
    second = plan_one(planner, first.fields, source="ingress:eu1").writes[0]
    assert second.fields.count(b"synapse-source") == 1 and keys.F_TIME not in second.fields
    got = pairs(second.fields)
    assert got[b"synapse-source"] == b"ingress:eu1"
    assert got[b"synapse-id"] == b"1-1"
    assert got[b"synapse-route"] == b"any-source-errors"  # its first target's route
    assert got[b"type"] == b"app.error"


def test_explain(table_from: TableFrom) -> None:
    """Routing.explain says, per route, whether it matched and why not."""
    t = table(table_from)
    body = {"stage": "staging"}
    got = {e["route"]: e for e in Planner(t).routing.explain("ingress", "model.ready", body)}
    assert got["models"]["matched"] is True and got["models"]["why_not"] is None
    assert got["prod"]["matched"] is False
    assert "stage eq 'production'" in got["prod"]["why_not"]
    assert "source 'ingress'" in got["eu-only"]["why_not"]
    assert "does not match '*.error'" in got["errors"]["why_not"]
    assert got["errors"]["to"] == ["error-events"]


PRODUCER_SET = [
    b"synapse-redrives", b"-100",
    b"synapse-reason", b"forged",
    b"synapse-destination", b"elsewhere",
    b"synapse-replay-of", b"1-1",
    b"synapse-source", b"forged",
]  # fmt: skip


def test_copies_and_dead_letters_replace_every_producer_synapse_field(
    table_from: TableFrom,
) -> None:
    """A producer's synapse-* fields reach neither a copy nor a dead letter: only Synapse's."""
    planner = Planner(table(table_from))
    body = {"model_id": "m", "version": "1"}
    routed = [b"type", b"model.updated", b"data", json.dumps(body).encode(), *PRODUCER_SET]
    plan = planner.plan_entry("ingress", b"ingress", b"1-0", routed, 1, NOW_MS)
    assert plan.outcome == ROUTED
    for write in plan.writes:
        got = pairs(write.fields)
        assert got[b"synapse-source"] == b"ingress" and got[b"synapse-id"] == b"1-0"
        assert not {b"synapse-redrives", b"synapse-reason", b"synapse-destination"} & set(got)
        assert b"synapse-replay-of" not in got
    unrouted = [b"type", b"nothing.x", b"data", b"{}", *PRODUCER_SET]
    dead = planner.plan_entry("ingress", b"ingress", b"2-0", unrouted, 1, NOW_MS)
    got = pairs(dead.writes[0].fields)
    assert got[b"synapse-reason"] == b"no_route" and got[b"synapse-source"] == b"ingress"
    assert not {b"synapse-redrives", b"synapse-destination", b"synapse-replay-of"} & set(got)


@pytest.mark.parametrize("provenance", ["true", "false"])
def test_the_hot_path_builds_the_same_plan_as_the_constructors(
    table_from: TableFrom, provenance: str
) -> None:
    """The planner builds EntryPlan and Write with tuple.__new__ (every field in order):
    each is the value and type the named constructors give, so a reordered field fails."""
    from synapse.plan import Write

    planner = Planner(table(table_from, provenance=provenance))
    body = {"model_id": "m", "stage": "production", "metrics": {"accuracy": 0.95}}
    planned = plan_one(planner, entry("model.ready", body))
    assert type(planned) is EntryPlan
    assert planned == EntryPlan(
        planned.entry_id,
        ROUTED,
        planned.writes,
        planned.routes,
        reason=None,
        error=None,
        event_type="model.ready",
    )
    assert planned.entry_id == b"1-1" and planned.reason is None and planned.error is None
    for write, (dest, _route) in zip(planned.writes, planned.routes, strict=True):
        assert type(write) is Write and write.stream == dest
        maxlen = planner.routing.maxlen_for(dest)
        assert write == Write(dest, write.base, maxlen, write.provenance)
        assert write.maxlen == maxlen
        if provenance == "true":
            assert write.provenance == (b"ingress", b"1-1", _route.encode())
        else:
            assert write.provenance is None
