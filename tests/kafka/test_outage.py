"""The broker going away: the router reports not ready, backs off (bounded attempts and log
lines), and routes again by itself once a broker answers on the same address: tansu keeps
topics in memory only, so the router creates its named topics again (docs/kafka.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from synapse.tansu import TansuBroker
from tests.conftest import write_table
from tests.kafka.support import Got, produce, read_back
from tests.support.polling import wait_sync
from tests.support.router import RouterProcess, router_args

TABLE = """
    version: 1
    router: {{group: {topic}.g, block_ms: 200, batch: 50}}
    sources: ["{topic}.in"]
    routes:
      - name: all
        match: "*"
        to: ["{topic}.out"]
"""


def _all(ids: list[bytes]) -> Callable[[list[Got]], bool]:
    wanted = set(ids)
    return lambda got: wanted <= {g.headers.get("synapse-id") for g in got}


def _routes(broker: TansuBroker, topic: str, n: int, start: int = 0) -> None:
    """n new records reach the destination, routed."""
    values = [json.dumps({"n": start + i}).encode() for i in range(n)]
    ids = produce(broker.bootstrap, f"{topic}.in", values, headers=[("type", b"t")])
    got = read_back(broker.bootstrap, f"{topic}.out", n, timeout_s=60, done=_all(ids))
    routed = {g.headers.get("synapse-id") for g in got if g.value in values}
    assert set(ids) <= routed, sorted(set(ids) - routed)[:5]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_broker_away_router_not_ready_backs_off_and_routes_again(
    tmp_path: Path, topic: str
) -> None:
    """Broker killed: /readyz 503 and synapse_redis_up 0 within seconds, the process alive,
    a handful of attempts and warnings (no hot loop); a broker back on the same port (empty:
    memory storage): ready again by itself, its topics created again, new records routed."""
    broker = TansuBroker(log_dir=tmp_path / "tansu").start()
    config = write_table(tmp_path / "cfg", TABLE.format(topic=topic))
    args = [*router_args(config, None, consumer="r"), "--url", broker.url]
    router = RouterProcess(None, None, args=args, log_path=tmp_path / "router.log")
    try:
        router.start(wait_ready=True)
        _routes(broker, topic, 20)
        broker.kill()
        wait_sync(lambda: router.readyz() == 503, 60, "not ready once the broker is gone")
        router.wait_metric("synapse_redis_up", lambda v: v == 0)
        errors = router.total("synapse_redis_errors_total")
        before = router.text().splitlines()
        time.sleep(6.0)  # the observation window: attempts and log lines are counted over it
        attempts = router.total("synapse_redis_errors_total") - errors
        lines = router.text().splitlines()[len(before) :]
        assert router.alive() and router.readyz() == 503
        assert router.get("/healthz")[0] == 200
        print(f"KAFKA_OUTAGE attempts_in_6s={attempts} log_lines_in_6s={len(lines)}")
        assert 1 <= attempts <= 20, attempts  # capped exponential backoff with jitter
        assert all(line.startswith("{") for line in lines), lines[:3]  # librdkafka quiet
        assert len(lines) <= 3, lines  # one warning per outage, not one per attempt
        assert router.events("redis_unavailable")
        broker.start()  # the same port, no topics
        wait_sync(lambda: router.readyz() == 200, 90, lambda: f"ready again: {router.tail()}")
        router.wait_metric("synapse_redis_up", lambda v: v == 1)
        _routes(broker, topic, 20, start=100)
        assert router.alive()
        assert router.events("kafka_consumer_reopened")  # started over from the new broker
    finally:
        router.kill()
        broker.stop()
