"""A consumer group's lag on Kafka topics: the router's ``synapse_source_lag`` and the CLI's.

Per topic, summed over its partitions: the end offset (the high watermark,
``ListOffsets``) minus the group's committed offset, never below 0; a partition the
group never committed counts from its low watermark when the group starts at the
earliest record, else 0 (it would start at the end). ``behind`` is that rule, and
the one place it is written: ``GroupLag`` (the router's gauge) and the ``synapse
streams`` / ``services`` commands (``cli/kafkastore.py``, which take the offsets of
every group at once through the admin client) both ask it.

``GroupLag`` reads on the gauges' interval (every 5 s, not per batch) with a client
of its own in a worker thread: it never joins the group (``OffsetFetch`` only), and
the consumer that routes is never blocked by it.

On tansu end offsets under-report after batched produce (docs/kafka.md), so the
lag there reads low (never negative: clamped); on Apache Kafka or Redpanda the
high watermark is exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from confluent_kafka import Consumer, KafkaError, TopicPartition

from synapse.backends.kafkaconfig import client_config
from synapse.backends.kafkafailures import CLIENT_LOG_LEVEL
from synapse.backends.kafkaops import watermarks

#: How long one metadata, offset or watermark request may take.
STATS_TIMEOUT_S = 5.0


def behind(
    marks: Mapping[int, tuple[int, int]], committed: Mapping[int, int], *, earliest: bool
) -> int:
    """Records of one topic a group has not committed yet: ``marks`` is {partition: (first
    offset, end offset)}, ``committed`` {partition: the group's committed offset} (a
    partition missing from it was never committed: the group starts at its first offset
    when ``earliest``, else at its end)."""
    total = 0
    for partition, (low, high) in marks.items():
        total += max(0, high - committed.get(partition, low if earliest else high))
    return total


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
        """{topic: records not yet committed by ``group``} for each of ``topics`` that exists."""
        client = self._client(group)
        meta = client.list_topics(timeout=STATS_TIMEOUT_S).topics
        partitions = {
            t: list(meta[t].partitions) if meta[t].error is None else []
            for t in topics
            if t in meta
        }
        asked = [TopicPartition(t, p) for t, ps in partitions.items() for p in ps]
        committed: dict[str, dict[int, int]] = {t: {} for t in partitions}
        for tp in client.committed(asked, timeout=STATS_TIMEOUT_S) if asked else []:
            assert tp.topic is not None and tp.partition is not None
            if tp.offset >= 0:
                committed[tp.topic][tp.partition] = tp.offset
        return {
            t: behind(watermarks(client, t, ps, STATS_TIMEOUT_S), committed[t], earliest=earliest)
            for t, ps in partitions.items()
        }

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
