"""``synapse dlq redrive`` and ``replay`` on Kafka killed with SIGKILL midway, then rerun:
nothing lost, and what is doubled is at most the page in flight (no transaction on tansu)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from synapse.backends import kafkaops
from synapse.backends.kafkamarks import Marks
from synapse.tansu import TansuBroker
from tests.kafka.cli import kafka_cli, make_topic, write_dead_letters
from tests.kafka.support import produce
from tests.support.polling import wait_sync

SYNAPSE = str(Path(sys.executable).parent / "synapse")


def _ns(broker: TansuBroker, topic: str) -> Counter[int]:
    """How many records of ``topic`` carry each ``n`` (header n, else the body's n), by reading
    (once nothing writes it: on tansu a batching producer's topic ends only when it pauses)."""
    partitions = kafkaops.topics(kafkaops.admin_client(broker.bootstrap)).get(topic)
    if partitions is None:
        return Counter()
    reader = kafkaops.reader(broker.bootstrap)
    try:
        marks = kafkaops.watermarks(reader, topic, range(partitions))
        found: Counter[int] = Counter()
        for msg in kafkaops.read(reader, topic, {p: lo for p, (lo, _) in marks.items()}):
            headers = dict(msg.headers() or [])
            raw = headers.get("n")
            found[int(raw) if raw is not None else json.loads(msg.value() or b"")["n"]] += 1
        return found
    finally:
        reader.close()


def _run_and_kill(config: Path, broker: TansuBroker, args: list[str], ready: object) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
    env.update(SYNAPSE_URL=broker.url, SYNAPSE_CONFIG=str(config))
    proc = subprocess.Popen([SYNAPSE, *args], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_sync(ready, timeout_s=60, what="progress before the kill", step_s=0.2)  # type: ignore[arg-type]
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_redrive_killed_midway_loses_nothing(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """SIGKILL during a redrive, then a rerun: every dead letter reaches its source at least
    once, at most one batch (4 at --rate 40) twice, and none is left outstanding."""
    total = 400
    cli, config = kafka_cli(broker, topic, tmp_path)
    write_dead_letters(broker, f"{topic}.dlq", total, source=topic)
    _run_and_kill(
        config,
        broker,
        ["dlq", "redrive", "--rate", "40"],
        lambda: json.loads(cli("dlq", "list", "--json").stdout)["total"] <= total - 40,
    )
    left = json.loads(cli("dlq", "list", "--json").stdout)["total"]
    assert 0 < left < total  # killed mid-way
    rerun = cli("dlq", "redrive", "--json")
    assert rerun.exit_code == 0, rerun.output
    copies = _ns(broker, topic)
    assert set(copies) == set(range(total))  # nothing lost
    assert sum(copies.values()) - total <= 4  # at most the batch in flight, twice
    assert json.loads(cli("dlq", "list", "--json").stdout)["total"] == 0


@pytest.mark.slow
def test_replay_killed_midway_loses_nothing(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """SIGKILL during a replay, then a rerun: every record is copied at least once, at most
    one page (200) twice, and the rerun resumes from the checkpoint."""
    total = 2000
    cli, config = kafka_cli(broker, topic, tmp_path)
    source, dest = f"{topic}.src", f"{topic}.copy"
    make_topic(broker, source)
    produce(broker.bootstrap, source, [b'{"n": %d}' % i for i in range(total)])
    _run_and_kill(
        config,
        broker,
        ["replay", source, "--to", dest, "--rate", "1000"],
        lambda: Marks(broker.bootstrap, kafkaops.Sender(broker.bootstrap)).load(
            f"replay/{source}|"
        ),
    )
    rerun = cli("replay", source, "--to", dest, "--json")
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout)["resumed_after"] is not None
    copies = _ns(broker, dest)
    assert set(copies) == set(range(total))
    assert sum(copies.values()) - total <= 200
