"""The router on Kafka end to end (in-process, against tansu): fan-out with provenance and
keys, an invalid record dead-lettered at once, the offsets committed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from synapse.tansu import TansuBroker
from tests.conftest import running
from tests.kafka.support import kafka_table, produce, read_back

TABLE = """
    version: 1
    router: {{group: {topic}.g, block_ms: 200, batch: 50, dead_letter: {topic}.dlq}}
    sources: ["{topic}.in"]
    routes:
      - name: orders
        match: "order.*"
        to: ["{topic}.a", "{topic}.b"]
"""


async def test_router_fans_out_and_dead_letters_on_kafka(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """Every order reaches both destinations once with its key and provenance headers; a
    record whose value is not JSON is dead-lettered once; nothing else is written."""
    table = kafka_table(tmp_path / "cfg", TABLE.format(topic=topic))
    source = f"{topic}.in"
    async with running(table, broker.url, consumer="r1"):
        ids = produce(
            broker.bootstrap,
            source,
            [json.dumps({"n": i}).encode() for i in range(20)],
            headers=[("type", b"order.created")],
            key=b"customer-7",
        )
        [bad] = produce(broker.bootstrap, source, [b"{not json"], headers=[("type", b"order.x")])
        # consumed in a thread: the router runs on this event loop
        copies = {
            d: await asyncio.to_thread(read_back, broker.bootstrap, f"{topic}.{d}", 20)
            for d in "ab"
        }
        dead = await asyncio.to_thread(read_back, broker.bootstrap, f"{topic}.dlq", 1)
    for d, got in copies.items():
        assert sorted(g.headers["synapse-id"] for g in got) == sorted(ids), d
        assert {g.key for g in got} == {b"customer-7"}
        assert {g.headers["synapse-source"] for g in got} == {source.encode()}
        assert {g.headers["synapse-route"] for g in got} == {b"orders"}
        assert sorted(json.loads(g.value or b"")["n"] for g in got) == list(range(20))
    assert len(dead) == 1 and dead[0].headers.get("synapse-id") == bad
