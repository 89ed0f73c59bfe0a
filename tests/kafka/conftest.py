"""Fixtures of the Kafka tests: a tansu broker of the session's own on a free port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from synapse.tansu import TansuBroker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """One tansu broker (memory storage) for the session; tests use topics of their own."""
    with TansuBroker(log_dir=tmp_path_factory.mktemp("tansu")) as b:
        yield b


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name unique to the test (the broker is shared by the session)."""
    name: str = request.node.name
    return "t." + "".join(c if c.isalnum() else "-" for c in name)[:200]
