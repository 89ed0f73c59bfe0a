"""Fixtures of the Kafka tests: a tansu broker of the session's own on a free port; after
each test, no librdkafka client left open (one would reconnect to a stopped broker and
print "Connect ... failed" after pytest's last line)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from synapse.backends import kafkaadmin
from synapse.tansu import TansuBroker
from tests.kafka.support import rdkafka_threads
from tests.support.polling import wait_sync


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One tansu broker (memory storage) for the session; tests use topics of their own."""
    with TansuBroker(log_dir=tmp_path_factory.mktemp("tansu")) as b:
        yield b


@pytest.fixture(autouse=True)
def no_client_left_open() -> Iterator[None]:
    """Fails the test that leaves a librdkafka client open. The process-wide admin clients
    (``kafkaadmin``, shared by every caller of its functions) are dropped first; a backend
    drops its own at ``close`` (tests/kafka/test_backend_kafka.py)."""
    yield
    kafkaadmin.forget_all()

    def none_left() -> bool:
        gc.collect()
        return not rdkafka_threads()

    wait_sync(none_left, 10, lambda: f"librdkafka clients closed: {rdkafka_threads()}")


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to the test (the broker is shared by the session)."""
    name: str = request.node.name
    return "t." + "".join(c if c.isalnum() else "-" for c in name)[:200]
