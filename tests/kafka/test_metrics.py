"""The router's metrics on Kafka, against tansu: the event latency from the record's
timestamp, the pending and lag gauges of a source, the store-up gauge."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from synapse import log as logging
from synapse.backends import open_backend
from synapse.backends.kafka import KafkaBackend
from synapse.config import RoutingTable
from synapse.metrics import Metrics
from synapse.plan import Planner
from synapse.tansu import TansuBroker
from tests.conftest import running, write_table
from tests.kafka.support import kafka_table
from tests.support.polling import wait_for, wait_sync
from tests.support.router import RouterProcess, key, router_args

TABLE = """
    version: 1
    router: {{group: {group}, block_ms: 100, batch: 10}}
    sources: ["{source}"]
    routes:
      - name: all
        match: "*"
        to: ["{out}"]
"""


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def produce_singly(bootstrap: str, topic: str, n: int) -> None:
    """``n`` records, one per produce request: tansu's end offsets are then exact (after
    batched produce ListOffsets under-reports: docs/kafka.md)."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 0,
            "batch.num.messages": 1,
            "max.in.flight": 1,
        }
    )
    for i in range(n):
        producer.produce(topic, value=b'{"n": %d}' % i, headers=[("type", b"t")])
        assert producer.flush(10) == 0


async def test_latency_is_measured_from_the_record_timestamp(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """synapse_event_latency_seconds on Kafka: commit time minus the record's timestamp
    (here a CreateTime set an hour back), not a reading of the <partition>-<offset> id."""
    source, out = f"{topic}.in", f"{topic}.out"
    table = kafka_table(tmp_path, TABLE.format(group=f"{topic}.g", source=source, out=out))
    metrics = Metrics()
    hour_ago_ms = int(time.time() * 1000) - 3_600_000
    async with running(table, broker.url, consumer="r1", metrics=metrics):
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        for i in range(5):
            producer.produce(
                source,
                value=json.dumps({"n": i}).encode(),
                headers=[("type", b"t")],
                timestamp=hour_ago_ms,
            )
        assert await asyncio.to_thread(producer.flush, 10) == 0

        def observed() -> float:
            return sample(metrics, "synapse_event_latency_seconds_count") or 0.0

        await wait_for(lambda: observed() >= 5, 60, "5 latencies observed")
    assert observed() == 5
    total = sample(metrics, "synapse_event_latency_seconds_sum") or 0.0
    assert 5 * 3600 <= total < 5 * 3700  # an hour each, plus the time the test took
    assert sample(metrics, "synapse_event_latency_seconds_bucket", le="60.0") == 0


@pytest.fixture
async def backend(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> AsyncIterator[tuple[KafkaBackend, RoutingTable, Metrics]]:
    """A Kafka backend subscribed to the test's source, partitions assigned."""
    source, out = f"{topic}.in", f"{topic}.out"
    table = kafka_table(tmp_path, TABLE.format(group=f"{topic}.g", source=source, out=out))
    metrics = Metrics()
    kafka = open_backend(
        broker.url,
        consumer="c1",
        password=None,
        block_ms=100,
        metrics=metrics,
        stopping=asyncio.Event(),
        log=logging.get("test"),
    )
    assert isinstance(kafka, KafkaBackend)
    await kafka.start(table.settings)
    assert sample(metrics, "synapse_redis_up") == 1  # the store answered: the broker, here
    await kafka.discover(table, create=True)

    async def joined() -> bool:
        assert await kafka.read(table.settings, [source], 100) == []
        return bool(kafka.assigned())

    await wait_for(joined, 30, "the group's partitions assigned")
    try:
        yield kafka, table, metrics
    finally:
        await kafka.close()


async def test_pending_counts_held_records_and_lag_the_uncommitted_ones(
    backend: tuple[KafkaBackend, RoutingTable, Metrics], broker: TansuBroker
) -> None:
    """refresh_stats on Kafka: synapse_source_pending = records read and not committed here;
    synapse_source_lag = end offset minus the group's committed offset (records produced one
    per request: tansu's end offsets are then exact)."""
    kafka, table, metrics = backend
    [source] = table.sources
    gauges: Callable[[], tuple[Any, Any]] = lambda: (  # noqa: E731
        sample(metrics, "synapse_source_pending", source=source),
        sample(metrics, "synapse_source_lag", source=source),
    )
    await kafka.refresh_stats(table, [source])
    assert gauges() == (0, 0)
    produce_singly(broker.bootstrap, source, 4)
    await kafka.refresh_stats(table, [source])
    assert gauges() == (0, 4)  # nothing committed yet: the group starts at the earliest
    read: list[Any] = []

    async def got_all() -> bool:
        read.extend(await kafka.read(table.settings, [source], 100) or [])
        return sum(len(b.entries) for b in read) >= 4

    await wait_for(got_all, 20, "4 records read")
    await kafka.refresh_stats(table, [source])
    assert gauges() == (4, 4)  # held here, not committed
    for batch in read:
        plan = Planner(table).plan_batch(batch.source, batch.entries, 0, batch.deliveries)
        result = await kafka.commit(plan, table.settings.group)
        assert not result.failed
    await kafka.refresh_stats(table, [source])
    assert gauges() == (0, 0)


def test_router_process_names_the_store_not_redis_and_exports_the_kafka_gauges(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """synapse-router on a kafka:// URL: router_starting carries url= and backend=kafka (no
    redis= field); /metrics has synapse_redis_up 1 (the store answers: the brokers) and the
    source's lag and pending gauges, both 0 once its records are routed and committed."""
    source, out = f"{topic}.in", f"{topic}.out"
    config = write_table(tmp_path / "cfg", TABLE.format(group=f"{topic}.g", source=source, out=out))
    produce_singly(broker.bootstrap, source, 3)
    args = [*router_args(config, None, consumer="r"), "--url", broker.url]
    router = RouterProcess(None, None, args=args, log_path=tmp_path / "router.log")
    try:
        router.start(wait_ready=True)
        start = router.wait_log("router_starting")
        assert (start["url"], start["backend"]) == (broker.url, "kafka")
        assert "redis" not in start
        router.wait_metric("synapse_events_consumed_total", lambda v: v >= 3, 60, source=source)
        gauges = (
            key("synapse_source_lag", source=source),
            key("synapse_source_pending", source=source),
        )
        wait_sync(lambda: all(g in router.scrape() for g in gauges), 30, "the gauges exported")
        router.wait_metric("synapse_source_lag", lambda v: v == 0, 30, source=source)
        assert router.metric("synapse_source_pending", source=source) == 0
        assert router.metric("synapse_redis_up") == 1
        assert router.stop() == 0
    finally:
        router.kill()


def test_group_lag_counts_a_group_without_commits_by_its_start_and_skips_missing_topics(
    broker: TansuBroker, topic: str
) -> None:
    """kafkastats.GroupLag: a group that never committed lags by every record when it starts
    at the earliest, by none at the latest; a topic the broker does not have is left out."""
    from synapse.backends.kafkastats import GroupLag

    produce_singly(broker.bootstrap, topic, 3)
    lag = GroupLag(broker.bootstrap, "test")
    try:
        missing = f"{topic}.missing"
        assert lag.lag(f"{topic}.g", [topic, missing], earliest=True) == {topic: 3}
        assert lag.lag(f"{topic}.g", [topic, missing], earliest=False) == {topic: 0}
    finally:
        lag.close()


def test_behind_is_end_minus_committed_and_a_partition_never_committed_counts_by_start() -> None:
    """kafkastats.behind (the router's gauge and the CLI's lag): per partition, end offset
    minus committed, never below 0 (tansu's under-reported ends); a partition with no commit
    counts from its first offset at ``earliest``, else not at all."""
    from synapse.backends.kafkastats import behind

    marks = {0: (0, 10), 1: (5, 8), 2: (0, 4)}
    committed = {0: 7, 2: 6}  # partition 2's commit is past the end tansu reports
    assert behind(marks, committed, earliest=True) == 3 + 3 + 0
    assert behind(marks, committed, earliest=False) == 3 + 0 + 0
    assert behind({}, {}, earliest=True) == 0
