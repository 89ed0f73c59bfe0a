"""The gateway's librdkafka consumers: each on a thread of its own, reading by ``assign``.

confluent-kafka's ``Consumer`` is not thread-safe, and its calls block: every call
on one runs on that consumer's single worker thread, in order, awaited from the
event loop. None joins a group or commits (``group.id`` is required by the client
and never used). The operator's ``SYNAPSE_KAFKA_CONFIG`` (TLS, SASL...) applies,
as for every Kafka client Synapse makes. ``record_entry`` turns a record into the
entry the SSE side shows (``synapse/kafka/records.py``'s mapping, the record's
timestamp as its time).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, Message

from synapse.backends.kafkaconfig import client_config
from synapse.backends.kafkafailures import CLIENT_LOG_LEVEL, BrokerWatch
from synapse.gateway.sse import Entry, entry
from synapse.kafka.records import to_entry

#: The group id the client requires; the gateway never joins it or commits under it.
GROUP = "synapse-gateway"
#: How long the broker may hold a fetch with nothing new (bounds the live latency on
#: brokers that wait the whole time; librdkafka's default is 500 ms).
FETCH_WAIT_MS = 100


def consumer_config(bootstrap: str, name: str, watch: BrokerWatch, *, eof: bool) -> dict[str, Any]:
    return client_config(
        bootstrap,
        {
            "group.id": GROUP,
            "client.id": f"synapse-gateway-{name}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            # a position no longer retained (or a topic made again): its first record
            "auto.offset.reset": "earliest",
            "enable.partition.eof": eof,
            "fetch.wait.max.ms": FETCH_WAIT_MS,
            "error_cb": watch,
            "log_level": CLIENT_LOG_LEVEL,
        },
    )


class Worker:
    """One consumer and the one thread that calls it."""

    def __init__(self, bootstrap: str, name: str, watch: BrokerWatch, *, eof: bool = False):
        self.consumer = Consumer(consumer_config(bootstrap, name, watch, eof=eof))
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"gateway-kafka-{name}")
        self._closed = False

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def close(self) -> None:
        """Close the consumer (after any call in progress) and let the thread end."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self.call(self.consumer.close)
        self._thread.shutdown(wait=False)


def record_entry(topic: str, msg: Message, data_field: bytes = b"data") -> Entry:
    """A consumed record as the gateway shows it: id ``<partition>-<offset>``, its time the
    record's timestamp when the event carries none."""
    p, offset = msg.partition() or 0, msg.offset() or 0
    headers: Any = msg.headers()
    eid, fields = to_entry(p, offset, msg.value(), headers, data_field)
    _, ms = msg.timestamp()
    return entry(topic, eid.decode(), (p, offset), list(fields or []), ms if ms >= 0 else -1)
