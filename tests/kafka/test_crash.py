"""kill -9 of the router on Kafka, three times during a drain of a growing source: nothing lost;
every duplicate (the uncommitted tail routed again) carries its provenance and is counted."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from synapse.tansu import TansuBroker
from tests.conftest import write_table
from tests.kafka.support import Feeder, Got, produce, read_back
from tests.support.polling import wait_sync
from tests.support.router import RouterProcess, router_args

#: Records in the source before the first start; the feeder adds up to 500/s until the last kill.
PREFILL = 10_000
KILLS = 3
TABLE = """
    version: 1
    router: {{group: {topic}.g, block_ms: 200, batch: 200, max_deliveries: 10,
              dead_letter: {topic}.dlq}}
    sources: ["{topic}.in"]
    routes:
      - name: all
        match: "*"
        to: ["{topic}.a", "{topic}.b"]
"""


_HEADERS = [("type", b"t")]


def _value(n: int) -> bytes:
    return json.dumps({"n": n, "pad": "x" * 200}).encode()


def _routed(router: RouterProcess) -> float:
    """Records routed by this run of the router (0 until its metrics port answers)."""
    try:
        return router.total("synapse_events_routed_total")
    except (AssertionError, OSError):
        return 0.0


def _all(ids: list[bytes]) -> Callable[[list[Got]], bool]:
    wanted = set(ids)
    return lambda got: wanted <= {g.headers.get("synapse-id") for g in got}


@pytest.mark.slow
@pytest.mark.timeout(720)  # worst case: three slow rebalances under load, then the read-back
def test_router_killed_three_times_mid_drain_loses_nothing(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """Three kill -9s while routing a growing source (all partitions) to two topics: every
    record reaches both, none dead-lettered; duplicates are only re-routed tails, with
    provenance. The source keeps growing until the last kill (``Feeder``): a prefilled one
    can be drained by one run before the test sees its metrics (cached ~1 s), leaving the
    next run nothing to route (the "restart stall" of docs/kafka.md)."""
    config = write_table(tmp_path / "cfg", TABLE.format(topic=topic))
    args = [*router_args(config, None, consumer="r"), "--url", broker.url]
    source = f"{topic}.in"
    prefill = [_value(i) for i in range(PREFILL)]
    ids = produce(broker.bootstrap, source, prefill, headers=_HEADERS)
    feeder = Feeder(broker.bootstrap, source, lambda n: _value(PREFILL + n), headers=_HEADERS)
    router = RouterProcess(None, None, args=args, log_path=tmp_path / "router.log")
    try:
        feeder.start()
        try:
            for kill in range(KILLS):
                router.start()
                wait_sync(
                    lambda: _routed(router) >= 1500 or not router.alive(),
                    timeout_s=150,  # a rejoin after kill -9 waits out the session timeout
                    what=f"routing before kill {kill + 1}",
                )
                assert router.alive(), router.tail()
                router.kill()
        finally:
            ids += feeder.stop()
        router.start(wait_ready=True)
        try:
            copies = {
                d: read_back(
                    broker.bootstrap, f"{topic}.{d}", len(ids), timeout_s=240, done=_all(ids)
                )
                for d in "ab"
            }
        finally:
            assert router.stop() == 0
    finally:
        router.kill()  # a failure must not leave the process running
    for d, got in copies.items():
        seen = Counter(g.headers["synapse-id"] for g in got)
        lost = set(ids) - set(seen)
        duplicated = sum(seen.values()) - len(seen)
        print(f"kafka_kill9 {d}: records={len(ids)} lost={len(lost)} duplicated={duplicated}")
        assert not lost, sorted(lost)[:5]
        assert len(seen) == len(ids)
        assert {g.headers["synapse-source"] for g in got} == {source.encode()}
        assert duplicated < KILLS * 2 * 200 * 3  # at most the uncommitted tails
    assert not read_back(broker.bootstrap, f"{topic}.dlq", 0, timeout_s=2)
