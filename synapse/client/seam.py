"""The one seam between ``Bus`` and a store: Redis (``redis_io.py``) or Kafka (``kafka_store.py``).

``Bus`` and the subscriber loop are the same on every store; what differs is behind
two small protocols. A ``Store`` is one Bus's connection: it writes what
``Publisher`` builds (the envelope and the table check are the publisher's, on every
store), keeps the registration alive (``presence``), names the service's retry
stream and the default dead-letter stream, and opens the subscriber's I/O. The
subscriber's I/O (``StreamsIO``) reads entries, hands them back again for a retry,
and writes outcomes (``OutcomeWriter``: acks, dead letters, dedupe marks) behind
the handlers. ``resolve_url`` finds the URL (``url=``, the environment, the embedded
server's URL file) and checks a Bus can use it; ``open_store`` picks the
implementation by it, importing the Kafka one only for a ``kafka://`` URL
(confluent-kafka is the ``kafka`` extra).
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from synapse import settings
from synapse.backend import Pages, Presence, Read
from synapse.backoff import Backoff
from synapse.config import RouterSettings
from synapse.errors import Failure, SynapseError, UsageError
from synapse.kafka.names import DEFAULT_DLQ, retry_topic, topic_problem
from synapse.kafka.url import backend_kind
from synapse.kafka.url import parse as parse_kafka
from synapse.plan import Entry
from synapse.registry import ServiceInfo

if TYPE_CHECKING:
    from synapse.client.acks import Outcome
    from synapse.client.publisher import Item, Publisher

#: Why a Bus cannot use a kafka:// URL in this environment.
KAFKA_MISSING = "Bus on a kafka:// URL needs confluent-kafka: pip install 'synapse-router[kafka]'"


class OutcomeWriter(Protocol):
    """Outcomes queued by the handlers, written behind them (``acks.Acks`` on Redis)."""

    refused: int

    def ack(self, stream: str, entry_id: bytes) -> None: ...

    def add(self, outcome: Outcome) -> None: ...

    @property
    def backlog(self) -> int: ...

    async def flushed(self) -> None: ...

    async def run(self, stopping: asyncio.Event) -> None: ...


class StreamsIO(Protocol):
    """One consumer of the service's group on its streams (``RedisStreams`` on Redis)."""

    streams: list[str]

    @property
    def acks(self) -> OutcomeWriter: ...

    async def setup(self) -> None: ...

    def own_pending(self) -> Pages: ...

    async def read(self) -> Read | None: ...

    def read_ahead(self, previous: Read) -> asyncio.Future[Read] | None: ...

    def reclaim(self) -> Pages: ...

    def classify(self, exc: BaseException) -> Failure: ...

    async def claim_again(self, stream: str, entry_id: bytes) -> tuple[Entry | None, int]: ...

    async def keep(self, stream: str, ids: Sequence[bytes], min_idle_ms: int) -> None: ...

    async def marked(self, keys: Sequence[str]) -> list[bool]: ...

    async def forget_idle(self) -> None: ...

    async def farewell(self) -> None: ...

    async def close(self) -> None: ...


class Store(Protocol):
    """The store-specific half of one ``Bus``."""

    kind: str
    #: Where handler dead letters go when neither the table nor ``Bus(dead_letter=)`` says.
    default_dead_letter: str

    def retry_stream(self, service: str) -> str: ...

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
    ) -> str: ...

    async def publish_many(
        self, publisher: Publisher, items: Iterable[Item], *, stream: str | None, key: bytes | None
    ) -> list[str]: ...

    def presence(self, info: Callable[[], ServiceInfo], ttl_s: float) -> Presence: ...

    def streams(
        self,
        *,
        settings: RouterSettings,
        starts: dict[str, str],
        stopping: asyncio.Event,
        log: Any,
        backoff: Backoff,
    ) -> StreamsIO: ...

    async def close(self) -> None: ...


def check_url(url: str) -> str:
    """``url`` when a Bus can use it: a malformed ``kafka://`` URL, or one without
    confluent-kafka installed, raises ``UsageError`` saying what is wrong."""
    if backend_kind(url) == "kafka":
        parse_kafka(url)
        if importlib.util.find_spec("confluent_kafka") is None:
            raise UsageError(KAFKA_MISSING)
    return url


def resolve_url(url: str | None) -> str:
    """``url``, else SYNAPSE_URL / SYNAPSE_REDIS_URL, else the embedded server's URL file;
    a malformed ``kafka://`` URL, or one without confluent-kafka, raises ``UsageError``."""
    found = url or os.environ.get("SYNAPSE_URL") or os.environ.get("SYNAPSE_REDIS_URL")
    if found:
        return check_url(found)
    state = settings.state_dir(os.environ.get("SYNAPSE_STATE_DIR"))
    from_file = settings.url_from_state(state)
    if from_file:
        return from_file
    raise SynapseError(
        "no Redis URL: pass Bus(url=...), set SYNAPSE_URL, or start the router (bin/run) "
        f"so that {state / settings.URL_FILE} exists"
    )


def default_dead_letter(kind: str) -> str:
    """``synapse:dlq`` on Redis, ``synapse.dlq`` on Kafka (``:`` is no topic character)."""
    return DEFAULT_DLQ if kind == "kafka" else RouterSettings().dead_letter


def check_names(
    kind: str,
    *,
    service: str | None = None,
    dead_letter: str | None = None,
    streams: Sequence[str] = (),
) -> None:
    """On Kafka, a ValueError naming the first name that makes no legal topic: the
    service's (its retry topic), the dead-letter stream, a subscribed stream."""
    if kind != "kafka":
        return
    if service is not None:
        retry_topic(service)
    named = [("dead_letter", dead_letter)] if dead_letter else []
    for what, name in [*named, *(("subscribe", s) for s in streams)]:
        why = topic_problem(name) if isinstance(name, str) and name else None
        if why:
            raise ValueError(f"{what}: {why}")


def record_key(key: str | bytes | None) -> bytes | None:
    """``publish(key=)`` as the record key (UTF-8 for text)."""
    return key.encode() if isinstance(key, str) else key


def open_store(url: str, *, password: str | None) -> Store:
    """The store for ``url``: Kafka for ``kafka://``, else Redis (single or cluster)."""
    if backend_kind(url) == "kafka":
        from synapse.client.kafka_store import KafkaStore

        return KafkaStore(url)
    from synapse.client.redis_io import RedisStore

    return RedisStore(url, password=password)
