"""The Kafka backend's commit of a batch: copies produced, then the offsets.

Every write of the plan is produced with ``acks=all`` (``to_records``, the source
record's key kept) and the producer flushed; the records whose every copy was
acknowledged stop holding their partition's commit point, and each partition whose
point moved is committed up to its first record still held (``kafkaheld.py``). A crash
re-routes at most that uncommitted tail. Producing and committing are not one
transaction (tansu has none): a transactional producer would go here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from synapse.backend import CommitResult
from synapse.backends.kafkaconfig import client_config
from synapse.backends.kafkaconsumer import GroupConsumer
from synapse.backends.kafkafailures import CLIENT_LOG_LEVEL, BrokerWatch
from synapse.backends.kafkaheld import HeldRecords, Partition
from synapse.backends.kafkaproduce import produce
from synapse.kafka.records import Record, position, to_records
from synapse.plan import BatchPlan

#: How long a broker may take to answer metadata at start before it counts as unreachable.
CONNECT_TIMEOUT_S = 5.0
#: The longest one flush waits before it checks whether every broker went away.
FLUSH_SLICE_S = 0.1

#: {entry id: {destination: error}} of the writes a destination refused.
Refused = dict[bytes, dict[str, str]]


def producer_config(bootstrap: str, client_id: str, watch: BrokerWatch) -> dict[str, Any]:
    """The producer's settings: every copy acknowledged by all in-sync replicas."""
    return client_config(
        bootstrap,
        {
            "error_cb": watch,
            "log_level": CLIENT_LOG_LEVEL,
            "client.id": client_id,
            "acks": "all",
            # tansu has no InitProducerId; on a real cluster SYNAPSE_KAFKA_CONFIG may say
            # enable.idempotence=true (docs/kafka.md)
            "enable.idempotence": False,
            "linger.ms": 2,
            "message.timeout.ms": 30_000,
            "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT_S * 1000),
        },
    )


class Committer:
    """Commits plans of records held in ``held`` (the producer and the group's consumer)."""

    def __init__(
        self, producer: Producer, group: GroupConsumer, held: HeldRecords, watch: BrokerWatch
    ) -> None:
        self.producer, self.group, self.held, self.watch = producer, group, held, watch
        self.data_field = b"data"

    async def commit(self, plan: BatchPlan) -> CommitResult:
        errors: Refused = {}
        done: list[tuple[Partition, int, bytes]] = []
        skipped: set[bytes] = set()
        for each in plan.entries:
            partition, offset = position(each.entry_id)
            at = (plan.source, partition)
            held = self.held.get(at, offset)
            if held is None:
                skipped.add(each.entry_id)  # committed already, or its partition was revoked
                continue
            done.append((at, offset, each.entry_id))
            records = to_records(each.writes, held.key, self.data_field)
            self._produce(records, each.entry_id, errors)
        await asyncio.to_thread(self._flush)
        failed = {eid: next(iter(errors[eid].values())) for eid in errors}
        for at, offset, eid in done:
            if eid not in failed:
                self.held.release(at, offset)
        await self.commit_offsets()
        return CommitResult(failed=failed, skipped=frozenset(skipped), refused=errors)

    def _produce(self, records: list[tuple[str, Record]], eid: bytes, errors: Refused) -> None:
        """Produce every write of entry ``eid``; a refusal is noted in ``errors`` per topic
        (one delivery callback per entry: the topic comes with the message)."""

        def acknowledged(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.setdefault(eid, {})[msg.topic() or "?"] = str(err)

        for topic, record in records:
            try:
                produce(self.producer, topic, record, acknowledged)
            except KafkaException as exc:  # refused before sending (too large, bad topic)
                errors.setdefault(eid, {})[topic] = str(exc.args[0])

    def _flush(self) -> None:
        """Wait for every acknowledgement, in slices: every broker gone ends the wait (the
        copies not acknowledged stay in the producer; their records stay uncommitted)."""
        while self.producer.flush(FLUSH_SLICE_S):
            self.watch.raise_if_down()

    async def commit_offsets(self) -> None:
        """Per partition: commit up to the first record still held."""
        moved = self.held.moved()
        if moved and self.group.kafka is not None:
            await self.group.commit([TopicPartition(t, p, point) for (t, p), point in moved])
            for at, point in moved:
                self.held.committed(at, point)
