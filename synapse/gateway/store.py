"""The gateway's store seam: what the hub, catch-up and ``/streams`` ask of a backend.

The hub, channels and SSE code are the same on every backend; a ``StreamReader``
reads the store: ``redisreader.RedisReader`` (one XREAD connection plus a small
pool), ``clusterreader.ClusterReader`` (one XREAD per hash slot on Redis Cluster)
or ``kafkareader.KafkaReader`` (one librdkafka consumer by ``assign``, no group).
Positions and cursors are the reader's ``codec`` (``cursor.py``).
confluent-kafka is imported only when a ``kafka://`` URL is opened (it is the
optional ``kafka`` extra).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Protocol

from synapse.gateway.channel import Batches
from synapse.gateway.cursor import Codec, IdKey, Position
from synapse.gateway.sse import Entry
from synapse.kafka.url import backend_kind
from synapse.wire import is_cluster_url


class NotAStream(Exception):
    """A requested key exists and is not a stream."""


class NotStreams(Exception):
    """Streams being read turned out not to be streams (a key replaced by another type)."""

    def __init__(self, streams: Sequence[str]) -> None:
        super().__init__(f"not streams: {', '.join(streams)}")
        self.streams = list(streams)


class StreamReader(Protocol):
    """One backend's reads: joins, the shared read, catch-up ranges, names, health."""

    #: The store's name in messages ("Redis", "Kafka").
    label: str
    codec: Codec
    #: The exceptions that mean "the store did not answer" (503, not ready, back off).
    errors: tuple[type[BaseException], ...]
    #: Names served only when listed by exact name (dead letters, registry...).
    internal_prefixes: tuple[str, ...]

    async def connect(self) -> None:
        """Check the store answers (once after start and after each failure)."""
        ...

    async def ping(self) -> None:
        """Check the store answers while nothing is being read."""
        ...

    async def join(self, stream: str) -> Position:
        """The live end of ``stream`` (where a new reader starts); NotAStream when the
        name holds something else. A stream that does not exist yet joins empty."""
        ...

    async def read(self, positions: Mapping[str, Position]) -> Batches:
        """Entries after ``positions``, waiting up to the read's block time for some."""
        ...

    async def wake(self) -> None:
        """End a blocked ``read`` early (new streams, or stopping)."""
        ...

    def restarted(self) -> list[tuple[str, IdKey]]:
        """Entries of the last read that the store numbered anew, behind the positions it
        was given (a Kafka topic made again): each stream's position moves to just
        before it, so they are delivered, not skipped as already read."""
        ...

    def catch_up(
        self, stream: str, start: Position, end: Position, page: int
    ) -> AsyncGenerator[list[Entry], None]:
        """Every entry of ``stream`` after ``start`` up to ``end`` (inclusive), a page at
        a time, each stream's order kept."""
        ...

    async def names(self, allows: Callable[[str], bool], limit: int) -> list[str]:
        """Streams that exist now and ``allows`` accepts, at most ``limit``."""
        ...

    async def close(self) -> None: ...


def open_reader(url: str, *, block_ms: int, count: int) -> StreamReader:
    """The reader of ``url``'s backend (confluent-kafka loaded only for ``kafka://``)."""
    if backend_kind(url) == "kafka":
        from synapse.gateway.kafkareader import KafkaReader

        return KafkaReader(url, block_ms=block_ms, count=count)
    if is_cluster_url(url):
        from synapse.gateway.clusterreader import ClusterReader

        return ClusterReader(url, block_ms=block_ms, count=count)
    from synapse.gateway.redisreader import RedisReader

    return RedisReader(url, block_ms=block_ms, count=count)
