"""The Kafka backend's commit of a batch: copies produced, then the offsets.

Every write of the plan is produced with ``acks=all`` (a copy as the record's value and
headers as read plus provenance when that is what its fields say, else ``to_record`` of
its fields; the source record's key kept) and the producer flushed; the records whose every copy was
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
from synapse.backends.kafkaheld import Held, HeldRecords
from synapse.backends.kafkaproduce import OnDelivery, produce
from synapse.kafka.records import Record, to_record, with_provenance
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
            # a delivery callback only for a refusal: flush's return says every record
            # was answered, and the commit needs to hear only of the refused ones
            "delivery.report.only.error": True,
            "message.timeout.ms": 30_000,
            "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT_S * 1000),
        },
    )


def _refusals(eid: bytes, errors: Refused) -> OnDelivery:
    """The delivery callback of entry ``eid``'s records: a refusal noted per topic."""

    def refused(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.setdefault(eid, {})[msg.topic() or "?"] = str(err)

    return refused


class Committer:
    """Commits plans of records held in ``held`` (the producer and the group's consumer)."""

    def __init__(
        self, producer: Producer, group: GroupConsumer, held: HeldRecords, watch: BrokerWatch
    ) -> None:
        self.producer, self.group, self.held, self.watch = producer, group, held, watch
        self.data_field = b"data"

    async def commit(self, plan: BatchPlan) -> CommitResult:
        """Produce every write of the plan (``_produce_all``), wait for every answer, release
        the records whose every copy was acknowledged, commit the offsets that moved."""
        errors: Refused = {}
        skipped: set[bytes] = set()
        done = self._produce_all(plan, errors, skipped)
        await asyncio.to_thread(self._flush)
        failed = {eid: next(iter(errors[eid].values())) for eid in errors}
        self.held.release_all(done, failed)
        await self.commit_offsets()
        return CommitResult(failed=failed, skipped=frozenset(skipped), refused=errors)

    def _produce_all(self, plan: BatchPlan, errors: Refused, skipped: set[bytes]) -> list[Held]:
        """Produce every write of each held record of ``plan`` with its key; the records
        produced. A refusal is noted in ``errors`` per entry and topic (one delivery callback
        per record, called only for a refusal: ``delivery.report.only.error``); an entry no
        longer held goes to ``skipped``. A copy of a record whose headers can be reused
        (``held.headers``) is its value and those headers plus provenance; any other write
        is ``to_record`` of its fields (the one mapping, ``records.py``). One flat loop: this
        is per record on the hot path."""
        done: list[Held] = []
        held_by_id = self.held.of_topic(plan.source)
        send, data_field = self.producer.produce, self.data_field
        for each in plan.entries:
            eid = each.entry_id
            held = held_by_id.get(eid)
            if held is None:
                skipped.add(eid)  # committed already, or its partition was revoked
                continue
            done.append(held)
            refused = _refusals(eid, errors)
            fields, head, key = held.entry[1], held.headers, held.key
            for write in each.writes:
                provenance = write.provenance
                if head is not None and provenance is not None and write.base is fields:
                    value, headers = held.value, with_provenance(head, provenance)
                else:
                    value, headers, _ = to_record(write.fields, None, data_field)
                try:
                    send(write.stream, value, key, headers=headers, on_delivery=refused)  # type: ignore[arg-type]
                except BufferError:  # the local queue is full: wait as every writer does
                    self._produce(eid, write.stream, Record(value, headers, key), refused, errors)
                except KafkaException as exc:  # refused before sending (too large, bad topic)
                    errors.setdefault(eid, {})[write.stream] = str(exc.args[0])
        return done

    def _produce(
        self, eid: bytes, topic: str, record: Record, refused: OnDelivery, errors: Refused
    ) -> None:
        """Produce ``record`` of entry ``eid``, waiting while the local queue is full."""
        try:
            produce(self.producer, topic, record, refused)
        except KafkaException as exc:  # refused before sending (too large, bad topic)
            errors.setdefault(eid, {})[topic] = str(exc.args[0])

    def _flush(self) -> None:
        """Wait for every acknowledgement, in slices: every broker gone ends the wait (the
        copies not acknowledged stay in the producer; their records stay uncommitted)."""
        while self.producer.flush(FLUSH_SLICE_S):
            self.watch.raise_if_down()

    async def commit_offsets(self) -> None:
        """Per partition still assigned: commit up to the first record still held."""
        moved = self.held.moved()
        if moved and self.group.kafka is not None:
            done = await self.group.commit([TopicPartition(t, p, pt) for (t, p), pt in moved])
            for tp in done:
                self.held.committed((tp.topic or "", tp.partition), tp.offset)
