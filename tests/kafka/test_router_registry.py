"""A router on Kafka registers in synapse.registry like a Bus: `synapse services` lists it
(kind router, what it consumes and produces) while it runs, and not once it has stopped."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from synapse.cli import main
from synapse.tansu import TansuBroker
from tests.conftest import write_table
from tests.support.polling import wait_sync
from tests.support.router import RouterProcess, router_args

TABLE = """
    version: 1
    router: {{group: {topic}.g, block_ms: 200, dead_letter: {topic}.dlq}}
    sources: ["{topic}.in"]
    routes:
      - name: all
        match: "*"
        to: ["{topic}.out"]
"""


def routers(url: str) -> list[dict[str, Any]]:
    """The router rows of ``synapse services --json`` on ``url``."""
    env = {"SYNAPSE_URL": None, "SYNAPSE_REDIS_URL": None}
    result = CliRunner().invoke(main, ["services", "--json", "--url", url], env=env)
    assert result.exit_code == 0, result.output
    return [s for s in json.loads(result.stdout)["services"] if s["kind"] == "router"]


def test_a_router_on_kafka_is_listed_by_services_until_it_stops(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """While routing, `synapse services --url kafka://...` lists the router (its consumer
    name, sources and destinations incl. the dead-letter topic); after SIGTERM it is gone."""
    config = write_table(tmp_path / "cfg", TABLE.format(topic=topic))
    args = [*router_args(config, None, consumer="kr1"), "--url", broker.url]
    router = RouterProcess(None, None, args=args, log_path=tmp_path / "router.log")
    rows: list[dict[str, Any]] = []
    try:
        router.start(wait_ready=True, timeout_s=60)

        def listed() -> bool:
            rows[:] = [r for r in routers(broker.url) if r["instance"] == "kr1"]
            return bool(rows)

        wait_sync(listed, 30, lambda: f"router in synapse services: {router.tail()}")
        [row] = rows
        assert row["name"] == "synapse-router"
        assert row["consumes"] == [f"{topic}.in"]
        assert f"{topic}.out" in row["produces"] and f"{topic}.dlq" in row["produces"]
        assert router.stop(60) == 0
        assert [r for r in routers(broker.url) if r["instance"] == "kr1"] == []
    finally:
        if router.alive():
            router.signal(signal.SIGKILL)
            router.wait(30)
