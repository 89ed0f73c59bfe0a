"""Routers sharing a source through the consumer group: two route its partitions between
them, a third joins mid-stream; nothing lost, every duplicate (a tail re-read after a
rebalance) carries its provenance and is counted, every partition routed."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from synapse.backends import kafkaadmin
from synapse.tansu import TansuBroker
from tests.conftest import write_table
from tests.kafka.support import Feeder, Got, produce, read_back
from tests.support.polling import wait_sync
from tests.support.router import RouterProcess, router_args

PARTITIONS = 6
PREFILL = 500  # per partition
TABLE = """
    version: 1
    router: {{group: {topic}.g, block_ms: 200, batch: 100, dead_letter: {topic}.dlq}}
    sources: ["{topic}.in"]
    routes:
      - name: all
        match: "*"
        to: ["{topic}.out"]
"""


def _value(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def _all(ids: list[bytes]) -> Callable[[list[Got]], bool]:
    wanted = set(ids)
    return lambda got: wanted <= {g.headers.get("synapse-id") for g in got}


def _consumed(router: RouterProcess) -> float:
    try:
        return router.total("synapse_events_consumed_total")
    except (AssertionError, OSError):
        return 0.0


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_routers_share_the_partitions_and_a_third_joins(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """Two routers in one group split the source's partitions, a third joins while records
    keep coming: every record reaches the destination (lost 0), duplicates are only tails
    re-read after a rebalance, each with provenance; every router and partition routed."""
    source = f"{topic}.in"
    kafkaadmin.ensure_topics(broker.bootstrap, [source], partitions=PARTITIONS)
    ids: list[bytes] = []
    for p in range(PARTITIONS):
        values = [_value(p * PREFILL + i) for i in range(PREFILL)]
        ids += produce(broker.bootstrap, source, values, headers=[("type", b"t")], partition=p)
    config = write_table(tmp_path / "cfg", TABLE.format(topic=topic))
    routers = [
        RouterProcess(
            None,
            None,
            args=[*router_args(config, None, consumer=name), "--url", broker.url],
            log_path=tmp_path / f"{name}.log",
        )
        for name in ("r1", "r2", "r3")
    ]
    feeder = Feeder(broker.bootstrap, source, lambda n: _value(10**6 + n), headers=[("type", b"t")])
    consumed: dict[str, float] = {}
    try:
        feeder.start()
        for r in routers[:2]:
            r.start()
        wait_sync(
            lambda: all(_consumed(r) > 0 for r in routers[:2]),
            120,
            "both routers consuming",
        )
        routers[2].start()
        wait_sync(lambda: _consumed(routers[2]) > 0, 120, "the third router consuming")
        ids += feeder.stop()
        got = read_back(broker.bootstrap, f"{topic}.out", len(ids), timeout_s=120, done=_all(ids))
        consumed = {f"r{i + 1}": _consumed(r) for i, r in enumerate(routers)}
        for r in routers:
            assert r.stop() == 0, r.tail()
    finally:
        feeder.stop()
        for r in routers:
            r.kill()
    seen = Counter(g.headers["synapse-id"] for g in got)
    lost = set(ids) - set(seen)
    duplicated = sum(seen.values()) - len(seen)
    print(f"kafka_group records={len(ids)} lost={len(lost)} duplicated={duplicated} {consumed}")
    assert not lost, sorted(lost)[:5]
    assert set(seen) == set(ids)  # no copy of a record never produced
    assert {g.headers["synapse-source"] for g in got} == {source.encode()}
    assert {int(i.split(b"-")[0]) for i in seen} == set(range(PARTITIONS))
    assert all(n > 0 for n in consumed.values()), consumed
    assert duplicated <= 3 * 2 * 100 * PARTITIONS  # at most a batch or two per rebalance
    assert not read_back(broker.bootstrap, f"{topic}.dlq", 0, timeout_s=2)
