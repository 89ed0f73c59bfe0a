"""The backend seam: the loop talks to the store only through ``backend.Backend``."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import synapse
from synapse import backend
from synapse.backends.cluster import ClusterBackend
from synapse.backends.kafka import KafkaBackend
from synapse.backends.redis import RedisBackend
from tests.support.imports import imported

#: The loop's modules: they plan, commit and retry through the protocol only.
LOOP = ("consumer", "pipeline", "batches", "chores", "backend")
#: Modules that speak to Redis: only the backends (and the CLI, the client) import them.
STORE = (
    "redis",
    "hiredis",
    "synapse.wire",
    "synapse.commit",
    "synapse.clustercommit",
    "synapse.reads",
    "synapse.pending",
    "synapse.sources",
    "synapse.cluster",
    "synapse.membership",
    "synapse.registry",
    "synapse.failures",
    "synapse.backends.redis",
    "synapse.backends.cluster",
    "confluent_kafka",
    "synapse.backends.kafka",
    "synapse.backends.kafkaadmin",
    "synapse.backends.kafkaattempts",
    "synapse.backends.kafkacommit",
    "synapse.backends.kafkaconfig",
    "synapse.backends.kafkaconsumer",
    "synapse.backends.kafkafailures",
    "synapse.backends.kafkahead",
    "synapse.backends.kafkahandout",
    "synapse.backends.kafkaheld",
    "synapse.backends.kafkamarks",
    "synapse.backends.kafkaops",
    "synapse.backends.kafkaproduce",
    "synapse.backends.kafkaregistry",
    "synapse.backends.kafkastats",
    "synapse.backends.kafkatable",
)


def _imports(module: str) -> list[str]:
    return imported(Path(synapse.__file__).parent / f"{module}.py", members=True)


@pytest.mark.parametrize("module", LOOP)
def test_the_loop_imports_no_store_module(module: str) -> None:
    """The loop's modules name no Redis or Kafka module: a store is a Backend."""
    roots = ("redis", "hiredis", "confluent_kafka")
    bad = [n for n in _imports(module) if n in STORE or n.split(".")[0] in roots]
    assert bad == [], f"synapse.{module} imports {bad}"


@pytest.mark.parametrize("kind", [RedisBackend, ClusterBackend, KafkaBackend])
def test_every_backend_implements_every_method_of_the_protocol(kind: type) -> None:
    """Every method of Backend exists on each implementation with the same parameters."""
    wanted = {
        name: inspect.signature(member)
        for name, member in vars(backend.Backend).items()
        if callable(member) and not name.startswith("_")
    }
    assert len(wanted) >= 15
    for name, signature in wanted.items():
        found = getattr(kind, name, None)
        assert found is not None, f"{kind.__name__} lacks {name}"
        assert list(inspect.signature(found).parameters) == list(signature.parameters), name
    assert kind.name in ("redis", "cluster", "kafka")


def test_entry_times_come_from_the_backend_or_from_stream_ids() -> None:
    """backend.entry_times: a batch's entries per millisecond of their addition to the
    source: the times the backend handed over (Kafka's record timestamps) when it did, else
    each Redis stream id's leading milliseconds; entries left out are not counted."""
    entries: list[tuple[bytes, list[bytes] | None]] = [
        (b"1700000000000-0", []),
        (b"1700000000000-1", []),
        (b"1700000000005-0", None),
    ]
    assert backend.entry_times(entries, None) == {1700000000000: 2, 1700000000005: 1}
    assert backend.entry_times(entries, None, {b"1700000000000-1"}) == {
        1700000000000: 1,
        1700000000005: 1,
    }
    kafka = [(b"0-0", []), (b"0-1", []), (b"2-7", [])]  # <partition>-<offset>: no time in it
    times = [1700000000100, 1700000000100, 1700000000042]
    assert backend.entry_times(kafka, times) == {1700000000100: 2, 1700000000042: 1}
    assert backend.entry_times(kafka, times, {b"0-0", b"0-1"}) == {1700000000042: 1}


def test_every_backend_module_is_a_store_module() -> None:
    """A module added under synapse/backends is on the STORE list the loop may not import."""
    folder = Path(synapse.__file__).parent / "backends"
    found = {f"synapse.backends.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"}
    assert found - set(STORE) == set()
