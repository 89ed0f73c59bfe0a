"""Where the ``synapse dlq`` commands find dead letters: a Redis stream or a Kafka topic.

``open_dead_letters`` picks by the URL; the commands format what ``select`` yields once.
On Kafka (``cli/kafkadlq.py``) a dead letter is a record of the dead-letter topic, its id
``<partition>-<offset>``; what was redriven or purged is marked in ``synapse.marks``
(records cannot be deleted), and ``select`` yields only what is still outstanding.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from synapse import keys
from synapse.cli import common
from synapse.cli.deadletter import DeadLetter, Selection, counted, select
from synapse.kafka.url import backend_kind


class DeadLetters(Protocol):
    """Where the dlq commands find dead letters: a Redis stream or a Kafka topic."""

    #: The dead-letter stream or topic.
    name: str

    def select(self, chosen: Selection, ids: tuple[str, ...] = ()) -> Iterator[DeadLetter]:
        """Those matching every filter (or exactly ``ids``), oldest first."""
        ...

    def counted(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        """``letters`` with their redrive counts."""
        ...

    def retry(self, service: str) -> str:
        """The retry stream of ``service`` (a ValueError when it cannot have one)."""
        ...


class RedisDeadLetters:
    """Dead letters in a Redis stream; redrive counts in its redrive-count hash."""

    def __init__(self, client: common.Client, name: str) -> None:
        self.client = client
        self.name = name

    def select(self, chosen: Selection, ids: tuple[str, ...] = ()) -> Iterator[DeadLetter]:
        return select(self.client, self.name, chosen, ids)

    def counted(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        return counted(self.client, self.name, letters)

    def retry(self, service: str) -> str:
        return keys.retry_stream(service)


def open_dead_letters(name: str) -> DeadLetters:
    """The dead letters of ``name`` in the store of the resolved URL."""
    if backend_kind(common.store_url()) == "kafka":
        from synapse.cli.kafkadlq import open_kafka_dead_letters

        return open_kafka_dead_letters(name)
    return RedisDeadLetters(common.connect(), name)
