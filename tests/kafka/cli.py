"""Helpers of the Kafka CLI tests: ``synapse`` in-process against the session's tansu broker,
with a routing table of the test's own (Kafka's topic-name rules)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from confluent_kafka import Consumer, TopicPartition

from synapse.backends import kafkaadmin, kafkaops
from synapse.cli import main
from synapse.events import dead_letter_fields
from synapse.kafka.records import to_record
from synapse.tansu import TansuBroker
from tests.conftest import write_table

Invoke = Callable[..., Result]

TABLE = """
version: 1
router:
  group: synapse-router
  dead_letter: {topic}.dlq
sources: ["{topic}"]
schemas:
  "model.*": model.json
routes:
  - name: models
    match: "model.*"
    to: [{topic}.models]
"""
MODEL_SCHEMA = {
    "type": "object",
    "required": ["model_id"],
    "properties": {"model_id": {"type": "string"}},
}


def kafka_cli(broker: TansuBroker, topic: str, folder: Path) -> tuple[Invoke, Path]:
    """A ``synapse ARGS`` runner on ``broker`` with the test's table, and the table's path."""
    config = write_table(folder, TABLE.format(topic=topic), {"model.json": MODEL_SCHEMA})

    def invoke(*args: str, input: str | bytes | None = None, **env: str | None) -> Result:
        environ: dict[str, str | None] = {
            "SYNAPSE_URL": broker.url,
            "SYNAPSE_REDIS_URL": None,
            "SYNAPSE_STATE_DIR": str(folder / "state"),
            "SYNAPSE_CONFIG": str(config),
            "SYNAPSE_DEBUG": None,
        }
        environ.update(env)
        return CliRunner().invoke(
            main, list(args), input=input, env=environ, catch_exceptions=False
        )

    return invoke, config


def as_json(result: Result) -> Any:
    """The JSON a --json command printed on stdout."""
    return json.loads(result.stdout)


def json_lines(result: Result) -> list[Any]:
    """Each line of stdout as JSON (tail --json prints one object a line)."""
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def make_topic(broker: TansuBroker, name: str, partitions: int = 1) -> None:
    kafkaadmin.ensure_topics(broker.bootstrap, [name], partitions=partitions)


def commit(broker: TansuBroker, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` ({partition: offset}) for ``group`` on ``topic``, as a consumer does."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def write_dead_letters(
    broker: TansuBroker,
    topic: str,
    count: int,
    *,
    reason: str = "schema_violation",
    source: str = "ingress",
    consumer: str | None = None,
    key: bytes | None = b"k",
    source_id: str | None = None,
) -> list[str]:
    """``count`` dead letters on ``topic`` as the router writes them (one record each, original
    field n=<i>, body {"model_id": "m<i>"}); their ids ``<partition>-<offset>``."""
    make_topic(broker, topic)
    producer = kafkaops.Sender(broker.bootstrap)
    ids = []
    for i in range(count):
        original = [b"type", b"model.ready", b"data", b'{"model_id": "m%d"}' % i, b"n", b"%d" % i]
        fields = dead_letter_fields(
            original,
            reason=reason,
            error="bad",
            source=source.encode(),
            entry_id=(source_id or f"0-{i}").encode(),
            deliveries=1,
            config_hash="abc",
            now_ms=1_700_000_000_000,
        )
        if consumer is not None:
            fields += [b"synapse-consumer", consumer.encode()]
        partition, offset = producer.produce(topic, to_record(fields, key))
        ids.append(f"{partition}-{offset}")
    return ids
