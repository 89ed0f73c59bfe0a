"""The one seam between the ``synapse`` commands and a store: Redis streams or Kafka topics.

A command asks a ``Store`` for what it shows or writes (streams with sizes and groups,
the last records and new ones, an append) and formats the answer once, for text and
``--json``. ``RedisStore`` (``cli/redisstore.py``) is what the commands did on Redis;
``KafkaStore`` (``cli/kafkastore.py``, confluent-kafka imported only for a ``kafka://``
URL) does the same on topics. What each store names a stream or an id:

- Redis: a stream; an entry id ``<ms>-<seq>`` (its time is in the id).
- Kafka: a topic; a record id ``<partition>-<offset>`` (its time is the record's
  timestamp), and a record may carry a key.

``info`` answers one JSON-able mapping per stream, the same keys on both (``name``,
``length``, ``first_id``/``first_time``, ``last_id``/``last_time``, ``oldest_age_s``,
``groups``: each with ``name``, ``consumers``, ``pending``, ``lag``...); Kafka adds
``partitions`` and says whether ``length`` and lags were counted or taken from the
broker's end offsets (``exact``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import click

from synapse.cli import connection
from synapse.cli.times import ms_time
from synapse.kafka.url import Kind, backend_kind


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One entry or record as the commands show it."""

    id: str
    ms: int  # its time, ms since the epoch (Redis: the id's; Kafka: the timestamp; -1: none)
    fields: list[bytes]  # flat name, value pairs (Kafka: headers, then the value as data)
    key: bytes | None = None  # Kafka's record key; None on Redis

    @property
    def time(self) -> str:
        """ISO 8601 UTC, or '' for no time."""
        return ms_time(self.ms) if self.ms >= 0 else ""


#: Where ``follow`` picks up: opaque to the commands (an id on Redis, offsets on Kafka).
Cursor = Any


class Store(Protocol):
    """What the commands need from a store."""

    kind: Kind
    #: What the store calls a stream in messages: "stream" or "topic".
    noun: str

    def names(self, match: str) -> list[str]:
        """The streams whose name matches the glob ``match``, sorted."""
        ...

    def exists(self, name: str) -> bool: ...

    def info(self, name: str) -> dict[str, Any]:
        """Length, first and last entry, groups with lag (a Failure when absent)."""
        ...

    def last(
        self, name: str, count: int, keep: Callable[[Record], bool] | None
    ) -> tuple[list[Record], Cursor]:
        """The last ``count`` records ``keep`` accepts (every one for None), oldest first,
        and where new ones start."""
        ...

    def follow(self, name: str, cursor: Cursor) -> Iterator[list[Record]]:
        """New records after ``cursor``, a batch (maybe empty) about every second, forever."""
        ...

    def append(self, name: str, fields: list[bytes], key: bytes | None = None) -> str:
        """Write one entry; its id."""
        ...


def open_store(
    *, exact: bool = False, router_group: str = "synapse-router", data_field: bytes = b"data"
) -> Store:
    """The store of the resolved URL (``connection.store_url``). Kafka only: ``exact``
    counts records by reading them instead of trusting the broker's end offsets;
    ``router_group`` is the group ``streams`` calls the router's; ``data_field`` is the
    field that is a record's value."""
    url = connection.store_url()
    ctx = click.get_current_context()
    ctx.meta["synapse.resolved_url"] = url
    if backend_kind(url) == "kafka":
        from synapse.cli.kafkastore import KafkaStore

        store = KafkaStore(url, exact=exact, router_group=router_group, data_field=data_field)
        ctx.call_on_close(store.close)
        return store
    from synapse.cli.redisstore import RedisStore

    return RedisStore(connection.connect())
