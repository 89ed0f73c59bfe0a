"""Dead letters on Kafka: the records of the dead-letter topic not yet marked handled.

A dead letter's id is its record's ``<partition>-<offset>``. Records cannot be deleted,
so a redrive or a purge writes a *handled* mark for each dead letter it took
(``synapse.marks``, ``backends/kafkamarks.py``): ``dlq list`` shows the records with no
mark (what is still outstanding), and a dead letter is redriven once. The records stay
in the topic until its retention removes them. ``--since``/``--until`` take a time (the
record's timestamp: when it was dead-lettered), never an id.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import click

from synapse import keys
from synapse.backends import kafkaops
from synapse.backends.kafkamarks import Marks, handled_key, redrives_key
from synapse.cli import connection
from synapse.cli.deadletter import DeadLetter, Selection
from synapse.cli.kafkastore import KafkaStore
from synapse.cli.times import parse_time_ms
from synapse.errors import UsageError
from synapse.kafka.names import retry_topic
from synapse.kafka.records import position

_RECORD_ID = re.compile(r"\d+-\d+")


def open_kafka_dead_letters(name: str) -> KafkaDeadLetters:
    """The dead letters of topic ``name`` on the broker of the resolved URL."""
    url = connection.store_url()
    ctx = click.get_current_context()
    ctx.meta["synapse.resolved_url"] = url
    store = KafkaStore(url)
    ctx.call_on_close(store.close)
    return KafkaDeadLetters(store, name)


def kafka_time(value: str | None, option: str) -> int | None:
    """``--since``/``--until`` on Kafka: ms since the epoch from a time (ISO 8601, ``-2h``,
    or ms); a record id is refused (it bounds one partition, not a topic)."""
    if value is None:
        return None
    value = value.strip()
    if _RECORD_ID.fullmatch(value):
        raise UsageError(
            f"{option} {value!r}: on Kafka {option} takes a time (ISO 8601, -2h, or ms since "
            "the epoch), not a record id"
        )
    return int(value) if value.isdigit() else parse_time_ms(value)


def record_id(value: str) -> tuple[int, int]:
    """(partition, offset) of a Kafka record id, or a usage error naming the format."""
    try:
        return position(value.strip().encode())
    except ValueError:
        raise UsageError(
            f"not a record id: {value!r} (expected <partition>-<offset>, e.g. 0-42)"
        ) from None


def record_ms(letter: DeadLetter) -> int:
    """A Kafka dead letter's timestamp (-1: none)."""
    return -1 if letter.ms is None else letter.ms


def within(ms: int, since: int | None, until: int | None) -> bool:
    """Whether ``ms`` is inside ``--since``/``--until`` (both inclusive, either absent)."""
    return (since is None or ms >= since) and (until is None or ms <= until)


class KafkaDeadLetters:
    """The outstanding dead letters of one topic, and the marks that settle them."""

    def __init__(self, store: KafkaStore, name: str) -> None:
        self.store = store
        self.name = name
        self.marks = Marks(store.bootstrap, store.sender)
        self._loaded: dict[str, dict[str, Any]] | None = None

    def loaded(self) -> dict[str, dict[str, Any]]:
        """Every mark, read once per command."""
        if self._loaded is None:
            self._loaded = self.marks.load()
        return self._loaded

    def is_handled(self, letter_id: str) -> bool:
        return handled_key(self.name, letter_id) in self.loaded()

    def select(self, chosen: Selection, ids: tuple[str, ...] = ()) -> Iterator[DeadLetter]:
        """Outstanding dead letters matching every filter (or exactly ``ids``), oldest first
        by timestamp; the filters are checked before anything is read."""
        since = kafka_time(chosen.since, "--since")
        until = kafka_time(chosen.until, "--until")
        wanted = [record_id(i) for i in ids]
        if wanted:
            return self._by_id(wanted)
        return self._scan(chosen, since, until)

    def _by_id(self, wanted: list[tuple[int, int]]) -> Iterator[DeadLetter]:
        """Each id's record, read from a position the broker surely has (at most its end
        offset minus one: a fetch past the true end answers nothing on tansu) up to it."""
        if not self.store.exists(self.name):
            return
        marks = self.store.marks(self.name)
        for partition, offset in wanted:
            low, high = marks.get(partition, (0, 0))
            if partition not in marks or offset < low:
                continue
            start = max(low, min(offset, high - 1))
            for msg in kafkaops.read(
                self.store.reader, self.name, {partition: start}, {partition: offset + 1}
            ):
                if msg.offset() == offset:
                    letter = self.letter(msg)
                    if not self.is_handled(letter.entry_id):
                        yield letter

    def _scan(
        self, chosen: Selection, since: int | None, until: int | None
    ) -> Iterator[DeadLetter]:
        if not self.store.exists(self.name):
            return
        self.loaded()  # before reading: a mark written later leaves its dead letter listed
        marks = self.store.marks(self.name)
        found: list[DeadLetter] = []
        for msg in kafkaops.read(
            self.store.reader, self.name, {p: lo for p, (lo, _) in marks.items()}
        ):
            letter = self.letter(msg)
            if self.is_handled(letter.entry_id):
                continue
            if not within(record_ms(letter), since, until):
                continue
            if chosen.reasons and letter.get(keys.F_REASON) not in chosen.reasons:
                continue
            if chosen.sources and letter.get(keys.F_SOURCE) not in chosen.sources:
                continue
            found.append(letter)
        found.sort(key=lambda x: (record_ms(x), *position(x.entry_id.encode())))
        yield from found

    def letter(self, msg: Any) -> DeadLetter:
        record = self.store.record(msg)
        return DeadLetter(entry_id=record.id, fields=record.fields, key=record.key, ms=record.ms)

    def counted(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        """``letters`` with the redrive counts recorded for the copies they were made from."""
        marks = self.loaded()
        out = []
        for letter in letters:
            mark = marks.get(redrives_key(letter.get(keys.F_SOURCE), letter.get(keys.F_ID)), {})
            count = mark.get("count", 0)
            out.append(letter.with_redrives(count if isinstance(count, int) else 0))
        return out

    def retry(self, service: str) -> str:
        return retry_topic(service)

    def settle(self, done: list[tuple[DeadLetter, dict[str, Any]]]) -> None:
        """Mark each dead letter handled with what was done to it (acks=all)."""
        now_ms = int(time.time() * 1000)
        self.marks.put_many(
            [
                (handled_key(self.name, letter.entry_id), {**what, "ms": now_ms})
                for letter, what in done
            ]
        )
        for letter, what in done:
            self.loaded()[handled_key(self.name, letter.entry_id)] = what

    def count_copies(self, copies: list[tuple[str, str, int]]) -> None:
        """Record the redrive count of each new copy ``(topic, id, count)``: its dead letter,
        if the router makes one, will show it."""
        self.marks.put_many([(redrives_key(t, i), {"count": n}) for t, i, n in copies])
