"""A Bus on Kafka registers itself in synapse.registry; `synapse services` and `synapse
topology` read it (and the groups' lag) on a kafka:// URL; URL and install errors."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from synapse.backends import kafkaregistry
from synapse.cli import main
from synapse.client import Bus, Event
from synapse.client.kafka_marks import SWEEP_AT, Marks
from synapse.errors import UsageError
from synapse.registry import ServiceInfo
from synapse.tansu import TansuBroker
from tests.client.conftest import serving
from tests.conftest import write_table
from tests.support.polling import wait_for


def synapse(*args: str) -> Result:
    """``synapse ARGS`` in-process (no URL from the environment)."""
    env = {"SYNAPSE_URL": None, "SYNAPSE_REDIS_URL": None, "SYNAPSE_DEBUG": None}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


async def services(url: str, name: str) -> list[dict[str, Any]]:
    """The rows of ``synapse services --json`` for service ``name``."""
    result = await asyncio.to_thread(synapse, "services", "--json", "--url", url)
    assert result.exit_code == 0, result.output
    return [s for s in json.loads(result.stdout)["services"] if s["name"] == name]


async def test_services_lists_a_running_bus_until_it_closes(
    broker: TansuBroker, topic: str
) -> None:
    """A running Bus on Kafka is listed by `synapse services --json --url kafka://...` with
    what it consumes and publishes, its group and its lag; after close it is gone at once
    (the tombstone), not after its TTL."""
    bus = Bus("cyrex", url=broker.url, block_ms=200, heartbeat_ttl_s=60)
    handled: list[Event] = []

    @bus.subscribe(topic, start="earliest")
    async def handle(event: Event) -> None:
        handled.append(event)

    async with serving(bus):
        await bus.publish("model.ready", {"model_id": "m1"}, stream=topic)
        await wait_for(lambda: len(handled) == 1, 30)
        rows: list[dict[str, Any]] = []

        async def listed() -> bool:
            rows[:] = await services(broker.url, "cyrex")
            return bool(rows) and topic in rows[0]["produces"]

        await wait_for(listed, 30, "cyrex in synapse services")
        [row] = rows
        assert row["kind"] == "service" and row["group"] == "cyrex"
        assert topic in row["consumes"] and row["publishes"] == ["model.ready"]
        assert 0 < row["ttl_ms"] <= 60_000 and row["instance"] == bus.consumer
        assert topic in row["streams"] and row["streams"][topic]["pending"] is None
        assert isinstance(row["streams"][topic]["lag"], int)
    assert await services(broker.url, "cyrex") == []


async def test_topology_on_kafka_shows_the_consuming_service(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """`synapse topology --json --url kafka://...` draws a registered Bus's group on the
    topic it consumes, from the Kafka table (synapse.dlq by default)."""
    config = write_table(
        tmp_path / "cfg",
        f"""
        version: 1
        sources: ["{topic}.in"]
        routes:
          - name: all
            match: "*"
            to: ["{topic}"]
        """,
    )
    bus = Bus("viewer", url=broker.url, block_ms=200)
    handled: list[Event] = []

    @bus.subscribe(topic, start="earliest")
    async def handle(event: Event) -> None:
        handled.append(event)

    async with serving(bus):
        await bus.publish("a.b", {}, stream=topic)
        await wait_for(lambda: len(handled) == 1, 30)

        async def published() -> bool:
            return any(topic in r["produces"] for r in await services(broker.url, "viewer"))

        await wait_for(published, 30, "viewer's heartbeat after its publish")
        result = await asyncio.to_thread(
            synapse, "topology", "--json", "--url", broker.url, "--config", str(config)
        )
    assert result.exit_code == 0, result.output
    graph = json.loads(result.stdout)
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert nodes["stream:synapse.dlq"]["role"] == "dead_letter"
    assert nodes["group:viewer"]["service"] is True
    edges = {(e["from"], e["to"]) for e in graph["edges"]}
    assert (f"stream:{topic}", "group:viewer") in edges
    assert ("producer:viewer", f"stream:{topic}") in edges


def test_a_registration_lives_for_its_ttl_from_the_record_timestamp() -> None:
    """A registry record is alive while its timestamp plus ttl_ms lies ahead, with the time
    left as ttl_ms; past it, it is not listed."""
    value = kafkaregistry.encode(ServiceInfo(name="svc", instance="h:1"), 15_000)
    alive = kafkaregistry.decode(value, 1_000_000, 1_010_000)
    assert alive is not None and alive.ttl_ms == 5_000 and alive.heartbeat_ms == 1_000_000
    assert kafkaregistry.decode(value, 1_000_000, 1_015_000) is None
    assert kafkaregistry.decode(b"not json", 1_000_000, 1_000_001) is None


def test_bus_says_what_is_wrong_with_a_malformed_kafka_url() -> None:
    """A kafka:// URL with a path is a UsageError naming the problem, before any I/O."""
    with pytest.raises(UsageError, match="no path, query"):
        Bus("svc", url="kafka://h:9092/x")


def test_bus_on_kafka_without_confluent_kafka_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without confluent-kafka, Bus on a kafka:// URL raises a UsageError naming the extra;
    so does `synapse services` (exit 2)."""
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)
    with pytest.raises(UsageError, match=r"synapse-router\[kafka\]"):
        Bus("svc", url="kafka://127.0.0.1:9092")
    result = synapse("services", "--url", "kafka://127.0.0.1:9092")
    assert result.exit_code == 2 and "synapse-router[kafka]" in result.stderr


def test_bus_on_kafka_refuses_names_kafka_cannot_have() -> None:
    """On Kafka, a dead-letter stream, a subscribed stream or a service name that makes no
    legal topic raises ValueError naming the problem at once (not a retry loop later)."""
    with pytest.raises(ValueError, match="dead_letter: 'synapse:dlq' has characters"):
        Bus("svc", url="kafka://127.0.0.1:9092", dead_letter="synapse:dlq")
    with pytest.raises(ValueError, match="no legal retry topic"):
        Bus("my service", url="kafka://127.0.0.1:9092")
    bus = Bus("svc", url="kafka://127.0.0.1:9092")
    with pytest.raises(ValueError, match="subscribe: 'jobs/a' has characters"):

        @bus.subscribe("jobs/a")
        async def handle(event: Event) -> None: ...


def test_dedupe_marks_expire_at_their_ttl_and_are_swept() -> None:
    """A mark counts until its time; a later, longer mark of the same key wins; once the
    table is full, expired marks are swept (memory stays bounded by the live ones)."""
    now = int(time.time() * 1000)
    marks = Marks()
    marks.note("a", now + 60_000)
    marks.note("a", now + 1_000)  # an older record read back later does not shorten it
    assert marks.marked(["a", "b"], now_ms=now + 59_999) == [True, False]
    assert marks.marked(["a"], now_ms=now + 60_000) == [False]
    for n in range(SWEEP_AT):
        marks.note(f"old{n}", 1)  # long expired: swept when the table fills
    assert marks.marked(["a"], now_ms=now) == [True] and len(marks._until) < SWEEP_AT
