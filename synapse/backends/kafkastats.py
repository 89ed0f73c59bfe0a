"""The lag of the router's consumer group on each Kafka source (``synapse_source_lag``).

Per source topic, summed over its partitions: the end offset (the high
watermark, ``ListOffsets``) minus the group's committed offset (``OffsetFetch``),
never below 0; a partition the group never committed counts from its low
watermark when the group starts at the earliest record, else 0 (it would start
at the end). Read on the gauges' interval (every 5 s, not per batch) by a client
of its own in a worker thread: it never joins the group, and the consumer that
routes is never blocked by it.

On tansu end offsets under-report after batched produce (docs/kafka.md), so the
lag there reads low (never negative: clamped); on Apache Kafka or Redpanda the
high watermark is exact.
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, TopicPartition

from synapse.backends.kafkaconfig import client_config
from synapse.backends.kafkafailures import CLIENT_LOG_LEVEL

#: How long one metadata, offset or watermark request may take.
STATS_TIMEOUT_S = 5.0


def _ignore(_error: KafkaError) -> None:
    """Client errors of the stats reader: its calls raise when they fail."""


class GroupLag:
    """Reads the group's lag per topic (blocking: call it from a worker thread)."""

    def __init__(self, bootstrap: str, client_id: str) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self._clients: dict[str, Consumer] = {}

    def _client(self, group: str) -> Consumer:
        found = self._clients.get(group)
        if found is None:
            found = self._clients[group] = Consumer(
                client_config(
                    self.bootstrap,
                    {
                        "group.id": group,  # for OffsetFetch only: this client never subscribes
                        "client.id": f"{self.client_id}-stats",
                        "enable.auto.commit": False,
                        "log_level": CLIENT_LOG_LEVEL,  # quiet: a broker away is the loop's
                        "error_cb": _ignore,  # a failure surfaces as the call's exception
                    },
                )
            )
        return found

    def lag(self, group: str, topics: Sequence[str], *, earliest: bool) -> dict[str, int]:
        """{topic: records not yet committed by ``group``} for each of ``topics``."""
        client = self._client(group)
        meta = client.list_topics(timeout=STATS_TIMEOUT_S).topics
        partitions = [
            TopicPartition(t, p)
            for t in topics
            if t in meta and meta[t].error is None
            for p in meta[t].partitions
        ]
        lags = dict.fromkeys((t for t in topics if t in meta), 0)
        if not partitions:
            return lags
        committed = client.committed(partitions, timeout=STATS_TIMEOUT_S)
        for tp in committed:
            assert tp.topic is not None and tp.partition is not None
            low, high = client.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=STATS_TIMEOUT_S, cached=False
            )
            start = low if earliest else high  # where a group with no commit starts
            behind = high - (tp.offset if tp.offset >= 0 else start)
            lags[tp.topic] += max(0, behind)
        return lags

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
