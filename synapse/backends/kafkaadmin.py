"""Kafka topics for the router: the table's names and globs against the broker's metadata.

Blocking calls (confluent-kafka's ``AdminClient``), run in a worker thread by the
backend. Topics are created with the broker's default partition count and
replication; on a real cluster create them yourself with the replication you
need (docs/kafka.md).
"""

from __future__ import annotations

import threading

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from synapse.backends.kafkaconfig import client_config
from synapse.backends.kafkafailures import CLIENT_LOG_LEVEL
from synapse.config import RoutingTable
from synapse.matching import compile_glob, is_glob
from synapse.sources import written_by

#: How long a metadata or create-topics request may take.
ADMIN_TIMEOUT_S = 10.0


_clients: dict[str, AdminClient] = {}
_clients_lock = threading.Lock()


def _admin(bootstrap: str) -> AdminClient:
    """One admin client per bootstrap list for the process (each holds threads and
    connections: one per rescan would pile them up)."""
    with _clients_lock:
        found = _clients.get(bootstrap)
        if found is None:
            found = _clients[bootstrap] = AdminClient(
                client_config(bootstrap, {"log_level": CLIENT_LOG_LEVEL})
            )
        return found


def forget(bootstrap: str) -> None:
    """Drop the process's admin client of ``bootstrap`` (destroyed once no call holds it;
    the next call opens a new one): a closed backend leaves no client reconnecting."""
    with _clients_lock:
        _clients.pop(bootstrap, None)


def forget_all() -> None:
    """Drop every cached admin client (``forget``), e.g. before a test broker stops."""
    with _clients_lock:
        _clients.clear()


def named_topics(table: RoutingTable) -> list[str]:
    """Every topic the table names literally: sources, destinations, unrouted, dead letter."""
    names = [s for s in table.sources if not is_glob(s)]
    return sorted({*names, *written_by(table)})


def topics(bootstrap: str) -> set[str]:
    """Every topic the broker lists (internal ones, ``__*``, left out)."""
    meta = _admin(bootstrap).list_topics(timeout=ADMIN_TIMEOUT_S)
    return {name for name in meta.topics if not name.startswith("__")}


def ensure_topics(
    bootstrap: str, names: list[str], *, partitions: int = -1, config: dict[str, str] | None = None
) -> list[str]:
    """Create the topics of ``names`` that do not exist (the broker's default partition
    count and replication unless ``partitions``); the ones created."""
    admin = _admin(bootstrap)
    have = set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
    missing = [n for n in names if n not in have]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(n, num_partitions=partitions, replication_factor=-1, config=config or {})
            for n in missing
        ],
        operation_timeout=ADMIN_TIMEOUT_S,
        request_timeout=ADMIN_TIMEOUT_S,
    )
    for future in futures.values():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return missing


def matching_topics(bootstrap: str, table: RoutingTable) -> list[str]:
    """The sources now: named ones, and the topics a glob matches (never one the router
    writes: that would be a routing loop)."""
    listed = topics(bootstrap)
    excluded = written_by(table)
    found: list[str] = []
    for pattern in table.sources:
        if not is_glob(pattern):
            found.append(pattern)
            continue
        test = compile_glob(pattern)
        found += sorted(t for t in listed if test(t) and t not in excluded and t not in found)
    return found
