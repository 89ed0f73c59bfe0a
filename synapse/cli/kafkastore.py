"""The store seam on Kafka topics (confluent-kafka: the ``kafka`` extra).

A topic's length and each group's lag come from the broker's end offsets, or, with
``exact``, from reading the topic: tansu under-reports end offsets after batched
produce (docs/kafka.md), so only a count by reading is exact there. A group's lag is
``kafkastats.behind``, the router's own rule; on a partition it never committed it
counts from the partition's first offset (what a new router group with ``start:
earliest`` would read). Records are shown in timestamp
order across partitions; ids are ``<partition>-<offset>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from synapse.backends import kafkaadmin, kafkaops
from synapse.backends.kafkastats import behind
from synapse.cli.errors import Failure
from synapse.cli.redisstore import age_s
from synapse.cli.store import Cursor, Record
from synapse.errors import UsageError
from synapse.kafka.names import topic_problem
from synapse.kafka.records import entry_id, to_entry, to_record
from synapse.kafka.url import Kind, parse
from synapse.matching import compile_glob

_ms = attrgetter("ms")

Offsets = kafkaops.Offsets


class KafkaStore:
    """Kafka topics through one admin client, one reader and (when writing) one producer."""

    kind: Kind = "kafka"
    noun = "topic"

    def __init__(
        self,
        url: str,
        *,
        exact: bool = False,
        router_group: str = "synapse-router",
        data_field: bytes = b"data",
    ) -> None:
        self.bootstrap = parse(url).bootstrap
        self.exact = exact
        self.router_group = router_group
        self.data_field = data_field
        self._admin: AdminClient | None = None
        self._reader: Consumer | None = None
        self._sender: kafkaops.Sender | None = None
        self._topics: dict[str, int] | None = None
        self._committed: kafkaops.Committed | None = None
        self._members: dict[str, list[dict[str, Any]]] = {}

    # -- clients, made when first needed ----------------------------------------------------

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = kafkaops.admin_client(self.bootstrap)
        return self._admin

    @property
    def reader(self) -> Consumer:
        if self._reader is None:
            self._reader = kafkaops.reader(self.bootstrap)
        return self._reader

    @property
    def sender(self) -> kafkaops.Sender:
        if self._sender is None:
            self._sender = kafkaops.Sender(self.bootstrap)
        return self._sender

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._sender is not None:
            self._sender.producer.flush(kafkaops.TIMEOUT_S)

    # -- the seam ---------------------------------------------------------------------------

    def topics(self) -> dict[str, int]:
        """{topic: partition count}, asked of the broker once per command."""
        if self._topics is None:
            self._topics = kafkaops.topics(self.admin)
        return self._topics

    def names(self, match: str) -> list[str]:
        test = compile_glob(match)
        return sorted(t for t in self.topics() if test(t))

    def exists(self, name: str) -> bool:
        return name in self.topics()

    def partitions(self, name: str) -> list[int]:
        """The partitions of topic ``name``; a Failure when there is no such topic."""
        count = self.topics().get(name)
        if count is None:
            raise Failure(f"no topic {name!r}")
        return list(range(count))

    def marks(self, name: str) -> dict[int, tuple[int, int]]:
        """{partition: (first offset, end offset)} as the broker reports them."""
        return kafkaops.watermarks(self.reader, name, self.partitions(name))

    def committed(self, name: str) -> dict[str, Offsets]:
        """{group: {partition: committed offset}} of the groups with a commit on ``name``
        (every group's offsets are asked once per command)."""
        if self._committed is None:
            self._committed = kafkaops.group_offsets(self.admin)
        return {g: dict(topics[name]) for g, topics in self._committed.items() if name in topics}

    def members(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """{group: its live members assigned partitions of ``name``, with those partitions}
        (every group is described once per command)."""
        if self._committed is None:
            self._committed = kafkaops.group_offsets(self.admin)
        if not self._members:
            self._members = kafkaops.group_members(self.admin, list(self._committed))
        out: dict[str, list[dict[str, Any]]] = {}
        for group, found in self._members.items():
            mine = [
                {
                    "name": m["name"],
                    "host": m["host"],
                    "partitions": sorted(p for t, p in m["assigned"] if t == name),
                }
                for m in found
            ]
            out[group] = [m for m in mine if m["partitions"]]
        return out

    def info(self, name: str) -> dict[str, Any]:
        marks = self.marks(name)
        committed = self.committed(name)
        members = self.members(name)
        committed.update({g: {} for g, found in members.items() if found and g not in committed})
        if self.exact:
            parts, lags, first, last = self._counted(name, marks, committed)
        else:
            parts = {
                p: {"first_offset": lo, "end_offset": hi, "length": hi - lo}
                for p, (lo, hi) in marks.items()
            }
            lags = {g: behind(marks, offsets, earliest=True) for g, offsets in committed.items()}
            first, last = self._ends(name, marks)
        groups = [
            {
                "name": g,
                "router": g == self.router_group,
                "consumers": members.get(g, []),
                "pending": None,
                "lag": lags[g],
                "committed": {str(p): o for p, o in sorted(committed[g].items())},
                "last_delivered_id": None,
                "entries_read": None,
            }
            for g in sorted(committed)
        ]
        return {
            "name": name,
            "length": sum(int(p["length"]) for p in parts.values()),
            "exact": self.exact,
            "partitions": [{"partition": p, **parts[p]} for p in sorted(parts)],
            "first_id": first.id if first else None,
            "first_time": first.time if first else "",
            "last_id": last.id if last else None,
            "last_time": last.time if last else "",
            "last_generated_id": None,
            "oldest_age_s": age_s(first_ms(first)),
            "router_group": self.router_group,
            "groups": groups,
        }

    def last(
        self, name: str, count: int, keep: Callable[[Record], bool] | None
    ) -> tuple[list[Record], Cursor]:
        """The last ``count`` kept records by timestamp: each partition is read from ``count``
        (or, filtering, 20x it and at least 1000) before the broker's end offset to the end
        as it is now (an under-reported end offset only makes the read longer)."""
        window = max(1, count) if keep is None else max(1000, count * 20)
        marks = self.marks(name)
        starts = {p: max(lo, hi - window) for p, (lo, hi) in marks.items()}
        cursor = dict(starts)
        found: list[tuple[int, int, int, Record]] = []
        for msg in kafkaops.read(self.reader, name, starts):
            record = self.record(msg)
            cursor[msg.partition() or 0] = (msg.offset() or 0) + 1
            if keep is None or keep(record):
                found.append(
                    (first_ms(record) or 0, msg.partition() or 0, msg.offset() or 0, record)
                )
        found.sort(key=lambda x: x[:3])
        shown = [r for *_, r in found][-count:] if count > 0 else []
        return shown, cursor

    def follow(self, name: str, cursor: Cursor) -> Iterator[list[Record]]:
        follower = kafkaops.reader(self.bootstrap, reset="latest")
        try:
            follower.assign([TopicPartition(name, p, o) for p, o in dict(cursor).items()])
            while True:
                batch: list[Record] = []
                for msg in follower.consume(100, 1.0):
                    err = msg.error()
                    if err is None:
                        batch.append(self.record(msg))
                    elif err.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(err)
                yield batch
        finally:
            follower.close()

    def append(self, name: str, fields: list[bytes], key: bytes | None = None) -> str:
        """Produce one record (the topic made with the broker's defaults when missing, as
        XADD makes a stream); its id ``<partition>-<offset>``."""
        why = topic_problem(name)
        if why:
            raise UsageError(why)
        if not self.exists(name):
            kafkaadmin.ensure_topics(self.bootstrap, [name])
            self._topics = None
        record = to_record(fields, key, self.data_field)
        partition, offset = self.sender.produce(name, record)
        return entry_id(partition, offset).decode()

    # -- helpers ----------------------------------------------------------------------------

    def record(self, msg: Message) -> Record:
        """A consumed record as the commands show it."""
        headers: Any = msg.headers()
        eid, fields = to_entry(
            msg.partition() or 0, msg.offset() or 0, msg.value(), headers, self.data_field
        )
        _, ms = msg.timestamp()
        return Record(
            id=eid.decode(), ms=ms if ms >= 0 else -1, fields=list(fields or []), key=msg.key()
        )

    def _ends(
        self, name: str, marks: dict[int, tuple[int, int]]
    ) -> tuple[Record | None, Record | None]:
        """The oldest of each partition's first record and the newest of the records at the
        broker's end offsets (on tansu, maybe not the last)."""
        firsts = list(
            kafkaops.read(
                self.reader,
                name,
                {p: lo for p, (lo, _) in marks.items()},
                {p: lo + 1 for p, (lo, _) in marks.items()},
            )
        )
        lasts = list(
            kafkaops.read(
                self.reader,
                name,
                {p: max(lo, hi - 1) for p, (lo, hi) in marks.items()},
                {p: max(lo, hi - 1) + 1 for p, (lo, hi) in marks.items()},
            )
        )
        oldest = min((self.record(m) for m in firsts), key=_ms, default=None)
        newest = max((self.record(m) for m in lasts), key=_ms, default=None)
        return oldest, newest

    def _counted(
        self, name: str, marks: dict[int, tuple[int, int]], committed: dict[str, Offsets]
    ) -> tuple[dict[int, dict[str, int]], dict[str, int], Record | None, Record | None]:
        """Lengths, lags and the first and last records by reading every record."""
        parts = {
            p: {"first_offset": lo, "end_offset": lo, "length": 0} for p, (lo, _) in marks.items()
        }
        lags = dict.fromkeys(committed, 0)
        oldest: Record | None = None
        newest: Record | None = None
        for msg in kafkaops.read(self.reader, name, {p: lo for p, (lo, _) in marks.items()}):
            p, offset = msg.partition() or 0, msg.offset() or 0
            parts[p]["length"] += 1
            parts[p]["end_offset"] = offset + 1
            for g, offsets in committed.items():
                if offset >= offsets.get(p, 0):
                    lags[g] += 1
            record = self.record(msg)
            if oldest is None or record.ms < oldest.ms:
                oldest = record
            if newest is None or record.ms >= newest.ms:
                newest = record
        return parts, lags, oldest, newest


def first_ms(record: Record | None) -> int | None:
    """The record's timestamp in ms (None for no record or no timestamp)."""
    return record.ms if record is not None and record.ms >= 0 else None
