"""synapse.client.Bus on Kafka (tansu): publish, subscribe, retries, dead letters, restarts,
two instances of one service, the registry."""

from __future__ import annotations

import asyncio
import json

from synapse.backends import kafkaadmin as admin
from synapse.client import Bus, Event
from synapse.tansu import TansuBroker
from tests.client.conftest import serving
from tests.kafka.support import read_back
from tests.support.polling import wait_for


async def test_publish_writes_the_envelope_as_headers_and_the_body_as_value(
    broker: TansuBroker, topic: str
) -> None:
    """publish / publish_many on Kafka: value = the JSON body, headers = type and the
    CloudEvents fields, key = publish(key=) (none by default); the ids come back in order."""
    async with Bus("trainer", url=broker.url, register=False) as bus:
        first = await bus.publish("model.ready", {"model_id": "m1"}, stream=topic, key="m1")
        more = await bus.publish_many([("a.b", {"n": 1}), ("a.c", {"n": 2})], stream=topic)
    got = await asyncio.to_thread(read_back, broker.bootstrap, topic, 3)
    by_id = {g.headers["id"].decode(): g for g in got}
    assert sorted(by_id) == sorted([first, *more]) and len(got) == 3
    one = by_id[first]
    assert one.key == b"m1" and json.loads(one.value or b"") == {"model_id": "m1"}
    assert one.headers["type"] == b"model.ready" and one.headers["source"] == b"trainer"
    assert one.headers["specversion"] == b"1.0" and one.headers["time"].endswith(b"Z")
    assert "data" not in one.headers
    assert [by_id[i].headers["type"] for i in more] == [b"a.b", b"a.c"]
    assert by_id[more[0]].key is None


async def test_subscriber_handles_wanted_types_and_skips_others(
    broker: TansuBroker, topic: str
) -> None:
    """Only events of the subscribed types reach the handler; the others are committed past
    unseen (the group's committed offset reaches the end)."""
    bus = Bus("runtime", url=broker.url, register=False, block_ms=200)
    seen: list[Event] = []

    @bus.subscribe(topic, types="model.ready", start="earliest")
    async def handle(event: Event) -> None:
        seen.append(event)

    async with serving(bus):
        await bus.publish("model.ready", {"model_id": "m1"}, stream=topic, key="k")
        await bus.publish("model.retired", {"model_id": "m0"}, stream=topic, key="k")
        await bus.publish("model.ready", {"model_id": "m2"}, stream=topic, key="k")
        await wait_for(lambda: len(seen) == 2 and bus.subscriber.skipped == 1, 30)  # type: ignore[union-attr]
    assert [e.data["model_id"] for e in seen] == ["m1", "m2"]
    assert seen[0].source == "runtime" and seen[0].stream == topic
    assert seen[0].entry_id.count("-") == 1
