"""A Bus on Kafka (``kafka://host:port[,host:port]``): the Kafka side of ``seam.Store``.

Publishing: ``Publisher.build`` makes the same fields as on Redis (the CloudEvents
envelope, the table check); the record is ``records.to_record`` of them: value =
the JSON body, headers = every other field in order (``type``, ``id``, ``source``,
``time``, ``specversion``, ...), key = ``publish(key=)`` (none by default).
Produced with ``acks=all`` and awaited: ``publish`` returns once the broker has
acknowledged the record. librdkafka retries a failed send by itself for up to
``message.timeout.ms``; without an idempotent producer (tansu has none) such a
retry can write the record twice, with the same ``id`` (``dedupe_s`` catches it).
A topic is created (the broker's defaults) the first time this Bus writes to it.

The registration is ``kafkaregistry.KafkaHeartbeat`` on ``synapse.registry``; the
subscriber's I/O is ``kafka_io.KafkaStreams``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Producer

from synapse.backend import Presence
from synapse.backends import kafkaadmin as admin
from synapse.backends.kafkaconfig import client_config
from synapse.backends.kafkaproduce import Refusals, produce, settle
from synapse.backends.kafkaregistry import KafkaHeartbeat
from synapse.backoff import Backoff
from synapse.client import tracing
from synapse.client.kafka_io import KafkaStreams
from synapse.config import RouterSettings
from synapse.kafka.names import DEFAULT_DLQ, retry_topic, topic_problem
from synapse.kafka.records import to_record
from synapse.kafka.url import parse
from synapse.registry import ServiceInfo

if TYPE_CHECKING:
    from synapse.client.publisher import Item, Publisher

#: How long a publish waits for the broker's acknowledgement.
PUBLISH_TIMEOUT_S = 30.0


def producer_for(bootstrap: str, client_id: str = "synapse-client") -> Producer:
    """A producer writing with ``acks=all`` (no idempotence: tansu has no InitProducerId)."""
    return Producer(
        client_config(
            bootstrap,
            {
                "client.id": client_id,
                "acks": "all",
                "enable.idempotence": False,
                "linger.ms": 2,
                "message.timeout.ms": int(PUBLISH_TIMEOUT_S * 1000),
            },
        )
    )


class KafkaStore:
    """One Bus's producer on Kafka; topics it writes to are created on first use."""

    kind = "kafka"
    default_dead_letter = DEFAULT_DLQ

    def __init__(self, url: str) -> None:
        self.url = url
        self.bootstrap = parse(url).bootstrap
        self.producer = producer_for(self.bootstrap)
        self._topics: set[str] = set()

    def retry_stream(self, service: str) -> str:
        return retry_topic(service)

    async def publish(
        self,
        publisher: Publisher,
        event: Any,
        data: dict[str, Any] | None,
        *,
        stream: str | None,
        event_id: str | None,
        extra: dict[str, str] | None,
        key: bytes | None,
    ) -> str:
        """Produce one event and wait for its acknowledgement; its ``id``."""
        event_type = getattr(event, "type_name", None) or getattr(event, "event_type", event)
        with tracing.publish_span(str(event_type), stream or publisher.stream):
            target, fields, chosen = publisher.build(
                event, data, stream=stream, event_id=event_id, extra=extra
            )
            await self._write([(target, fields)], key, publisher.data_field)
        return chosen

    async def publish_many(
        self, publisher: Publisher, items: Iterable[Item], *, stream: str | None, key: bytes | None
    ) -> list[str]:
        """Produce every event (all checked first: none written if one is bad) and wait for
        every acknowledgement; a refused record raises after all were answered."""
        built = [
            publisher.build(item) if not isinstance(item, tuple) else publisher.build(*item)
            for item in items
        ]
        if stream is not None:
            built = [(stream, fields, chosen) for _, fields, chosen in built]
        await self._write(
            [(target, fields) for target, fields, _ in built], key, publisher.data_field
        )
        return [chosen for _, _, chosen in built]

    async def _write(
        self, records: list[tuple[str, list[bytes]]], key: bytes | None, data_field: bytes
    ) -> None:
        if not records:
            return
        missing = sorted({t for t, _ in records} - self._topics)
        for topic in missing:
            why = topic_problem(topic)
            if why:
                raise ValueError(f"cannot publish to {topic!r} on Kafka: {why}")
        if missing:
            await asyncio.to_thread(admin.ensure_topics, self.bootstrap, missing)
            self._topics.update(missing)
        await asyncio.to_thread(self._produce_all, records, key, data_field)

    def _produce_all(
        self, records: list[tuple[str, list[bytes]]], key: bytes | None, data_field: bytes
    ) -> None:
        """Produce every record and wait for every acknowledgement (blocking)."""
        refusals = Refusals()
        for topic, fields in records:
            produce(self.producer, topic, to_record(fields, key, data_field), refusals)
        settle(self.producer, refusals.errors, PUBLISH_TIMEOUT_S, "publish not acknowledged")

    def presence(self, info: Callable[[], ServiceInfo], ttl_s: float) -> Presence:
        return KafkaHeartbeat(self.bootstrap, self.producer, info, ttl_s)

    def streams(
        self,
        *,
        settings: RouterSettings,
        starts: dict[str, str],
        stopping: asyncio.Event,
        log: Any,
        backoff: Backoff,
    ) -> KafkaStreams:
        return KafkaStreams(
            self.url, settings=settings, starts=starts, stopping=stopping, log=log, backoff=backoff
        )

    async def close(self) -> None:
        await asyncio.to_thread(self.producer.flush, 5.0)
