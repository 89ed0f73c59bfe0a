"""The router on a real server: routing, fan-out, provenance, dead letters, atomic commit."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis

from synapse.config import RoutingTable
from tests.conftest import running, wait_for
from tests.support.metrics import counted

BASIC = """
    version: 1
    router: {block_ms: 100, claim_idle_ms: 1000, rescan_interval_ms: 200}
    sources: [ingress, "ingress:*"]
    schemas:
      "model.*": model.json
    routes:
      - name: models
        match: "model.*"
        to: [model-events, all-events]
      - name: prod
        match: model.ready
        where: {stage: production}
        to: [platform-events, model-events]
      - name: errors
        match: "*.error"
        to: [error-events]
"""
MODEL_SCHEMA = {
    "type": "object",
    "required": ["model_id"],
    "properties": {"model_id": {"type": "string"}},
}


def xlen(r: redis.Redis, key: str) -> int:
    return int(r.xlen(key)) if r.exists(key) else 0


async def test_routes_fan_out_with_provenance(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """An event reaches the union of its routes' destinations, each once, with provenance."""
    table = table_from(BASIC, {"model.json": MODEL_SCHEMA})
    async with running(table, url):
        body = json.dumps({"model_id": "m1", "stage": "production"})
        eid = r.xadd("ingress", {"type": "model.ready", "data": body, "blob": b"\xff\x00\xfe"})
        await wait_for(lambda: xlen(r, "platform-events") == 1, what="routed")
        await wait_for(lambda: not r.xpending("ingress", "synapse-router")["pending"])
    assert xlen(r, "model-events") == 1  # named by two routes, written once
    assert xlen(r, "all-events") == 1
    [(_, fields)] = r.xrange("model-events")
    assert fields[b"data"] == body.encode()
    assert fields[b"blob"] == b"\xff\x00\xfe"  # binary copied byte for byte
    assert fields[b"synapse-source"] == b"ingress"
    assert fields[b"synapse-id"] == eid
    assert fields[b"synapse-route"] == b"models"
    assert xlen(r, "synapse:dlq") == 0


async def test_invalid_events_dead_lettered_on_first_delivery(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """Each bad-input class goes to the DLQ once with its reason; good ones still flow."""
    table = table_from(BASIC, {"model.json": MODEL_SCHEMA})
    bad = {
        "invalid_json": {"type": "model.ready", "data": "{not json"},
        "invalid_encoding": {"type": "model.ready", "data": b'{"model_id": "\xff"}'},
        "missing_type": {"data": json.dumps({"model_id": "x"})},
        "schema_violation": {"type": "model.ready", "data": json.dumps({"model_id": 7})},
        "no_route": {"type": "nothing.here", "data": "{}"},
        "too_deep": {"type": "x.error", "data": "[" * 100 + "]" * 100},
    }
    async with running(table, url):
        ids = {}
        for reason, fields in bad.items():
            ids[reason] = r.xadd("ingress", fields)
            r.xadd("ingress", {"type": "model.updated", "data": json.dumps({"model_id": "ok"})})
        await wait_for(lambda: xlen(r, "synapse:dlq") == len(bad), what="dead letters")
        await wait_for(lambda: xlen(r, "model-events") == len(bad), what="good events")
        await wait_for(lambda: not r.xpending("ingress", "synapse-router")["pending"])
    by_id = {f[b"synapse-id"]: f for _, f in r.xrange("synapse:dlq")}
    for reason, eid in ids.items():
        entry = by_id[eid]
        assert entry[b"synapse-reason"] == reason.encode(), (reason, entry)
        assert entry[b"synapse-deliveries"] == b"1"
        assert entry[b"synapse-source"] == b"ingress"
        for name, value in bad[reason].items():
            raw = value if isinstance(value, bytes) else value.encode()
            assert entry[name.encode()] == raw  # original fields kept
        assert entry[b"synapse-error"]


async def test_wrongtype_destination_never_acks_partial_fan_out(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """A destination holding a non-stream blocks that entry's whole fan-out, not the batch."""
    table = table_from(
        BASIC.replace("claim_idle_ms: 1000", "claim_idle_ms: 60000"), {"model.json": MODEL_SCHEMA}
    )
    r.set("all-events", "not a stream")
    async with running(table, url) as router:
        poison = r.xadd("ingress", {"type": "model.ready", "data": '{"model_id": "p"}'})
        r.xadd("ingress", {"type": "app.error", "data": "{}"})
        await wait_for(lambda: xlen(r, "error-events") == 1, what="rest of batch")
        await wait_for(
            lambda: counted(router.metrics, "synapse_events_retried", source="ingress") >= 1
        )
        pending = r.xpending_range("ingress", "synapse-router", "-", "+", 10)
    assert [p["message_id"] for p in pending] == [poison]
    assert xlen(r, "model-events") == 0  # no partial fan-out


async def test_delivery_counts_page_past_other_pending_entries(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """Counts come from XPENDING even when many other pending entries lie between the ids."""
    from synapse.consumer import Router
    from synapse.metrics import Metrics

    table = table_from(BASIC, {"model.json": MODEL_SCHEMA})
    router = Router(table, url, Metrics(), consumer="me")
    try:
        r.xgroup_create("ingress", "synapse-router", "0", mkstream=True)
        ids = [r.xadd("ingress", {"n": str(i)}) for i in range(300)]
        r.xreadgroup("synapse-router", "me", {"ingress": ">"}, count=300)
        r.xclaim("ingress", "synapse-router", "me", 0, [ids[-1]])  # a second delivery
        pending = router.backend.pending  # type: ignore[attr-defined]
        counts = await pending.delivery_counts(
            "ingress", "synapse-router", [(ids[0], []), (ids[-1], [])]
        )
    finally:
        await router.close()
    assert counts == {ids[0]: 1, ids[-1]: 2}


async def test_unreachable_cluster_is_a_connection_outage(
    table_from: Callable[..., RoutingTable],
) -> None:
    """No reachable cluster node counts as a connection error and backs off, not a crash."""
    import asyncio

    from synapse.consumer import Router
    from synapse.embedded import free_port
    from synapse.metrics import Metrics

    table = table_from(BASIC, {"model.json": MODEL_SCHEMA})
    metrics = Metrics()
    router = Router(table, f"redis+cluster://127.0.0.1:{free_port()}", metrics)
    task = asyncio.create_task(router.run())
    errors = "synapse_redis_errors"
    try:
        await wait_for(lambda: counted(metrics, errors, kind="connection") >= 2, what="2 attempts")
    finally:
        router.stop()
        await asyncio.wait_for(task, 10)
        await router.close()
    assert counted(metrics, errors, kind="internal") == 0
    assert not router.ready


async def test_reload_with_longer_block_gets_a_reader_that_outlasts_it(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """A new table with a longer block_ms replaces the reader; routing goes on."""
    table = table_from(BASIC, {"model.json": MODEL_SCHEMA})
    longer = table_from(
        BASIC.replace("block_ms: 100", "block_ms: 9000"), {"model.json": MODEL_SCHEMA}
    )
    async with running(table, url) as router:
        before = router.backend.reads.client  # type: ignore[attr-defined]
        router.swap_table(longer)
        await wait_for(lambda: router.table is longer, what="swap")
        r.xadd("ingress", {"type": "app.error", "data": "{}"})
        await wait_for(lambda: xlen(r, "error-events") == 1, what="routed after swap")
        reader = router.backend.reads.client  # type: ignore[attr-defined]
        timeout = reader.get_connection_kwargs()["socket_timeout"]
    assert reader is not before
    assert timeout > 9.0
