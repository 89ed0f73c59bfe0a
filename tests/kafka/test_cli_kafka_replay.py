"""``synapse replay`` on Kafka (tansu): by offset and by time, filters, resume, dry run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest
from confluent_kafka import Producer

from synapse.cli import kafkareplay
from synapse.cli.progress import Progress
from synapse.tansu import TansuBroker
from tests.kafka.cli import as_json, kafka_cli, make_topic
from tests.kafka.support import produce, read_back


def _fill(broker: TansuBroker, topic: str, count: int) -> None:
    """``count`` records on partition 0, alternating types a.one / b.two, key k<i%2>."""
    make_topic(broker, topic)
    for i in range(count):
        kind = b"a.one" if i % 2 == 0 else b"b.two"
        body = json.dumps({"n": i}).encode()
        produce(
            broker.bootstrap,
            topic,
            [body],
            headers=[("type", kind)],
            key=b"k%d" % (i % 2),
            partition=0,
            batched=False,
        )


def test_replay_by_offset_copies_with_provenance_and_keys(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """replay SOURCE --to DEST --since P-O --until P-O copies exactly that range, each copy
    with its key, synapse-replay-of <partition>-<offset> and synapse-replay-source; --type
    filters; --dry-run writes nothing."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    source, dest = f"{topic}.src", f"{topic}.copy"
    _fill(broker, source, 6)
    dry = cli(
        "replay", source, "--to", dest, "--since", "0-1", "--until", "0-4", "--dry-run", "--json"
    )
    assert dry.exit_code == 0, dry.output
    assert as_json(dry)["would_copy"] == 4 and as_json(dry)["copied"] == 0
    done = cli(
        "replay",
        source,
        "--to",
        dest,
        "--since",
        "0-1",
        "--until",
        "0-4",
        "--type",
        "b.*",
        "--json",
    )
    assert done.exit_code == 0, done.output
    report = as_json(done)
    assert (report["copied"], report["skipped"], report["first_id"], report["last_id"]) == (
        2,
        2,
        "0-1",
        "0-3",
    )
    got = read_back(broker.bootstrap, dest, 2)
    assert [json.loads(g.value or b"") for g in got] == [{"n": 1}, {"n": 3}]
    assert [g.key for g in got] == [b"k1", b"k1"]
    assert got[0].headers["synapse-replay-of"] == b"0-1"
    assert got[0].headers["synapse-replay-source"] == source.encode()
    assert got[0].headers["type"] == b"b.two"


def test_replay_resumes_from_its_checkpoint_and_restart_starts_over(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """A second replay with the same source, destination and filter copies only what came
    after the first one (its checkpoint); --restart copies the range again; text output as
    on Redis."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    source, dest = f"{topic}.src", f"{topic}.copy"
    _fill(broker, source, 3)
    first = cli("replay", source, "--to", dest)
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == f"replay {source} -> {dest}: copied 3, skipped 0 (filter)"
    _fill(broker, source, 2)
    second = as_json(cli("replay", source, "--to", dest, "--json"))
    assert (second["copied"], second["resumed_after"], second["first_id"]) == (2, "0-2", "0-3")
    again = as_json(cli("replay", source, "--to", dest, "--restart", "--json"))
    assert again["copied"] == 5 and again["resumed_after"] is None
    assert len(read_back(broker.bootstrap, dest, 10)) == 10


def test_replay_by_time_skips_records_before_since(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """--since as a time copies only records stamped at or after it (tansu's offsets_for_times
    answers 0 for any time, so records are also checked as they are read)."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    source, dest = f"{topic}.src", f"{topic}.copy"
    make_topic(broker, source)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 0})
    for i, stamp in enumerate((1_600_000_000_000, 1_700_000_000_000, 1_800_000_000_000)):
        producer.produce(
            source, value=b'{"n": %d}' % i, headers=[("type", b"a.b")], timestamp=stamp
        )
        producer.flush(10)
    report = as_json(
        cli(
            "replay",
            source,
            "--to",
            dest,
            "--since",
            "2023-11-14T22:13:20Z",
            "--until",
            "1750000000000",
            "--json",
        )
    )
    assert (report["copied"], report["first_id"]) == (1, "0-1")


def test_replay_refuses_bad_input(broker: TansuBroker, topic: str, tmp_path: Path) -> None:
    """An unknown source topic is exit 1; an unreadable --since, a partition the topic lacks
    and an illegal destination name are exit 2."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    source = f"{topic}.src"
    _fill(broker, source, 1)
    missing = cli("replay", "no.such", "--to", "x")
    assert missing.exit_code == 1 and "no topic 'no.such'" in missing.stderr
    bad_since = cli("replay", source, "--to", "x", "--since", "soon")
    assert bad_since.exit_code == 2 and "cannot read --since 'soon'" in bad_since.stderr
    no_partition = cli("replay", source, "--to", "x", "--since", "7-0")
    assert no_partition.exit_code == 2 and "no partition 7" in no_partition.stderr
    illegal = cli("replay", source, "--to", "bad:dest")
    assert illegal.exit_code == 2 and "Kafka does not allow" in illegal.stderr


class ShownProgress(Progress):
    """The real progress bar, shown as on a terminal; every instance kept for the test."""

    made: ClassVar[list[Progress]] = []

    def __init__(self, label: str, as_json: bool, total: int | None = None) -> None:
        super().__init__(label, as_json, total)
        self.shown = True
        ShownProgress.made.append(self)


def test_replay_progress_counts_the_range(
    broker: TansuBroker, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bar's total is the records of the range still to scan (from end offsets, exact for
    a topic filled one record per request) and it ends at 100%."""
    monkeypatch.setattr(kafkareplay, "Progress", ShownProgress)
    cli, _ = kafka_cli(broker, topic, tmp_path)
    source = f"{topic}.src"
    _fill(broker, source, 20)
    ShownProgress.made.clear()
    done = cli("replay", source, "--to", f"{topic}.copy", "--since", "0-5", "--until", "0-14")
    assert done.exit_code == 0, done.output
    [bar] = ShownProgress.made
    assert bar.total == bar.done == 10
