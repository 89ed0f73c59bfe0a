"""Attempts for max_deliveries across restarts on Kafka (synapse/backends/kafkaattempts.py):
a record that keeps killing its router is dead-lettered, the innocent ones after it are
routed, each once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from synapse import log as logging
from synapse.backend import Batch
from synapse.backends import open_backend
from synapse.backends.kafka import KafkaBackend
from synapse.config import RoutingTable
from synapse.metrics import Metrics
from synapse.plan import Planner
from synapse.tansu import TansuBroker
from tests.kafka.support import kafka_table, produce, read_back
from tests.support.polling import wait_for

TABLE = """
    version: 1
    router: {{group: {topic}.g, block_ms: 100, batch: 10, max_deliveries: 3,
              dead_letter: {topic}.dlq}}
    sources: ["{topic}.in"]
    routes:
      - name: all
        match: "*"
        to: ["{topic}.out"]
"""


async def _first_read(broker: TansuBroker, table: RoutingTable, name: str) -> tuple[Any, Batch]:
    """A new router's backend (a restarted process) and its first batch."""
    backend = open_backend(
        broker.url,
        consumer=name,
        password=None,
        block_ms=100,
        metrics=Metrics(),
        stopping=asyncio.Event(),
        log=logging.get("test"),
    )
    assert isinstance(backend, KafkaBackend)
    await backend.start(table.settings)
    await backend.discover(table, create=True)
    found: list[Batch] = []

    async def read() -> bool:
        found.extend(await backend.read(table.settings, list(table.sources), 100) or [])
        return bool(found)

    await wait_for(read, 30, f"{name}'s first batch")
    return backend, found[0]


async def test_a_record_that_kills_its_router_is_dead_lettered_after_max_deliveries(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """Three routers die holding the head record (never committed): deliveries 1, 2, 3 come
    from the attempts topic, the 2nd and 3rd alone in their batch; the 4th router dead-
    letters it (max_deliveries) and routes the two records behind it once each."""
    table = kafka_table(tmp_path / "cfg", TABLE.format(topic=topic))
    poison, *rest = produce(
        broker.bootstrap,
        f"{topic}.in",
        [json.dumps({"n": i}).encode() for i in range(3)],
        headers=[("type", b"t")],
        partition=0,
    )
    seen: list[tuple[int, int]] = []
    for _ in range(3):
        backend, batch = await _first_read(broker, table, "r")  # restarted under its name
        seen.append((len(batch.entries), (batch.deliveries or {}).get(poison, 1)))
        assert batch.entries[0][0] == poison
        await backend.close()  # gone without committing: as if killed mid-batch
    assert seen == [(3, 1), (1, 2), (1, 3)]
    backend, batch = await _first_read(broker, table, "r")
    try:
        planner = Planner(table)
        plan = planner.plan_batch(batch.source, batch.entries, 0, batch.deliveries)
        assert [e.outcome for e in plan.entries] == ["dead_letter"]
        result = await backend.commit(plan, table.settings.group)
        assert not result.failed
        routed: list[bytes] = []

        async def drained() -> bool:
            for more in await backend.read(table.settings, list(table.sources), 100) or []:
                got = planner.plan_batch(more.source, more.entries, 0, more.deliveries)
                assert not (await backend.commit(got, table.settings.group)).failed
                routed.extend(e[0] for e in more.entries)
            return len(routed) >= 2

        await wait_for(drained, 30, "the records behind the poison")
        assert routed == rest
    finally:
        await backend.close()
    dead = await asyncio.to_thread(read_back, broker.bootstrap, f"{topic}.dlq", 1)
    assert [d.headers["synapse-id"] for d in dead] == [poison]
    assert dead[0].headers["synapse-reason"] == b"max_deliveries"
    assert dead[0].headers["synapse-deliveries"] == b"4"
    copies = await asyncio.to_thread(read_back, broker.bootstrap, f"{topic}.out", 2)
    assert sorted(c.headers["synapse-id"] for c in copies) == sorted(rest)
