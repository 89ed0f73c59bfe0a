"""``synapse streams``, ``streams info``, ``tail`` and ``publish`` on Kafka (tansu)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from confluent_kafka import Consumer

from synapse.backends import kafkaops
from synapse.embedded import free_port
from synapse.tansu import TansuBroker
from tests.kafka.cli import as_json, commit, json_lines, kafka_cli, make_topic
from tests.kafka.support import produce, read_back
from tests.support.polling import wait_sync

SYNAPSE = str(Path(sys.executable).parent / "synapse")


def test_streams_lists_topics_with_partitions_and_each_groups_lag(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """streams --json: a topic's partitions, length and end offsets, the router group's lag
    (marked) and another group's lag, from committed offsets."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    make_topic(broker, topic, partitions=2)
    produce(
        broker.bootstrap, topic, [b'{"n": %d}' % i for i in range(3)], partition=0, batched=False
    )
    produce(broker.bootstrap, topic, [b'{"n": 9}'], partition=1, batched=False)
    commit(broker, "synapse-router", topic, {0: 1})
    commit(broker, "svc", topic, {0: 3, 1: 1})
    result = cli("streams", "--match", topic, "--json")
    assert result.exit_code == 0, result.output
    [row] = as_json(result)["streams"]
    assert row["name"] == topic and row["length"] == 4 and row["exact"] is False
    assert [(p["partition"], p["end_offset"]) for p in row["partitions"]] == [(0, 3), (1, 1)]
    groups = {g["name"]: g for g in row["groups"]}
    assert groups["synapse-router"]["router"] is True
    assert groups["synapse-router"]["lag"] == 2 + 1  # 2 on partition 0, all of partition 1
    assert groups["svc"]["router"] is False and groups["svc"]["lag"] == 0
    text = cli("streams", "--match", topic)
    assert text.exit_code == 0
    header, line = text.stdout.splitlines()
    assert header.split()[:3] == ["TOPIC", "PARTITIONS", "LENGTH"]
    assert line.split()[:3] == [topic, "2", "4"] and line.split()[-2:] == ["3", "0"]
    assert "under-report" in text.stderr


def test_streams_exact_counts_by_reading_where_end_offsets_under_report(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """streams info --exact counts every record of a batch-produced topic (tansu's end offsets
    under-report it) and the lag behind a commit, by reading."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    make_topic(broker, topic)
    produce(broker.bootstrap, topic, [b'{"n": %d}' % i for i in range(500)])
    assert len(read_back(broker.bootstrap, topic, 500)) == 500
    commit(broker, "synapse-router", topic, {0: 100})
    result = cli("streams", "info", topic, "--exact", "--json")
    assert result.exit_code == 0, result.output
    info = as_json(result)
    assert info["exact"] is True and info["length"] == 500
    assert info["partitions"] == [
        {"partition": 0, "first_offset": 0, "end_offset": 500, "length": 500}
    ]
    lags = {g["name"]: g["lag"] for g in info["groups"]}
    assert lags["synapse-router"] == 400  # (read_back's auto-committing group is there too)
    assert info["first_id"] == "0-0" and info["last_id"] == "0-499"
    text = cli("streams", "info", topic, "--exact")
    assert "length:  500 (counted by reading)" in text.stdout
    assert "group synapse-router (router): lag 400, committed 0@100, 0 members" in text.stdout


def test_unknown_topic_is_a_failure(broker: TansuBroker, topic: str, tmp_path: Path) -> None:
    """streams info / tail of a topic the broker does not have: exit 1 naming it."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    for args in (("streams", "info", "no.such"), ("tail", "no.such")):
        result = cli(*args)
        assert result.exit_code == 1
        assert "synapse: error: no topic 'no.such'" in result.stderr


def test_publish_then_tail_shows_ids_keys_and_bodies(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """publish --key writes one record (type and --field as headers, the body as value) and
    prints <partition>-<offset>; tail shows the last ones with their ids and keys."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    ids = []
    for n in range(3):
        body = json.dumps({"model_id": f"m{n}"})
        result = cli(
            "publish", topic, "--type", "model.ready", "--key", "k1", "--field", "t=x", body
        )
        assert result.exit_code == 0, result.output
        assert f"routes to {topic}.models (via models)" in result.stderr
        ids.append(result.stdout.strip())
    partition = ids[0].split("-")[0]
    assert ids == [f"{partition}-{n}" for n in range(3)]  # one key: one partition, in order
    shown = json_lines(cli("tail", topic, "-n", "2", "--json"))
    assert [s["id"] for s in shown] == ids[1:]
    assert shown[-1]["key"] == "k1" and shown[-1]["type"] == "model.ready"
    assert shown[-1]["body"] == {"model_id": "m2"} and shown[-1]["fields"]["t"] == "x"
    text = cli("tail", topic, "-n", "1", "--type", "model.*")
    assert text.stdout.splitlines()[:3] == [
        f"{ids[2]}  {shown[-1]['time']}  model.ready",
        "  key: k1",
        "  t: x",
    ]


def test_publish_refusals_are_the_same_as_on_redis(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """On Kafka publish refuses as on Redis (exit 1): a schema violation, a destination, the
    dead-letter topic; a name Kafka cannot have is a usage error (exit 2)."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    bad = cli("publish", topic, "--type", "model.ready", "{}")
    assert bad.exit_code == 1 and "'model_id' is a required property" in bad.stderr
    dest = cli("publish", f"{topic}.models", "--type", "model.ready", '{"model_id": "m"}')
    assert dest.exit_code == 1 and "is a destination (route models)" in dest.stderr
    dlq = cli("publish", f"{topic}.dlq", "--type", "model.ready", '{"model_id": "m"}')
    assert dlq.exit_code == 1 and "is the dead-letter stream" in dlq.stderr
    dry = cli("publish", topic, "--type", "other.thing", "{}", "--json")
    assert dry.exit_code == 1 and as_json(dry)["published"] is False
    illegal = cli("publish", "bad:name", "--no-validate", "--force", "{}")
    assert illegal.exit_code == 2 and "Kafka does not allow" in illegal.stderr
    redis_key = cli("publish", "s", "--key", "k", "{}", SYNAPSE_URL="redis://127.0.0.1:1/0")
    assert redis_key.exit_code == 2 and "--key is for Kafka" in redis_key.stderr


def test_tail_follow_as_a_process_prints_new_records_and_stops_on_ctrl_c(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """`synapse --url kafka://... tail --follow --json` (a real process) prints the last record,
    then one produced after it started, and exits 130 on SIGINT."""
    _, config = kafka_cli(broker, topic, tmp_path)
    make_topic(broker, topic)
    produce(broker.bootstrap, topic, [b'{"n": 0}'], headers=[("type", b"a.b")], batched=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
    env.update(SYNAPSE_CONFIG=str(config))
    proc = subprocess.Popen(
        [SYNAPSE, "--url", broker.url, "tail", topic, "-n", "1", "--follow", "--json"],
        env=env,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["body"] == {"n": 0} and first["id"] == "0-0"
        produce(broker.bootstrap, topic, [b'{"n": 1}'], headers=[("type", b"a.b")], batched=False)
        second = json.loads(proc.stdout.readline())
        assert second["body"] == {"n": 1} and second["id"] == "0-1"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_unreachable_broker_is_one_line(topic: str, tmp_path: Path) -> None:
    """No broker at the URL: exit 1 and one line naming it, no librdkafka log noise."""
    port = free_port()
    cli, _ = kafka_cli(TansuBroker(log_dir=tmp_path, port=port), topic, tmp_path)
    result = cli("streams")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"synapse: error: Kafka at kafka://127.0.0.1:{port}: Failed to get metadata: "
        "Local: Broker transport failure"
    ]


def test_tansu_describes_no_group_members(broker: TansuBroker, topic: str) -> None:
    """tansu lists no group without commits and describes a live group with no members, so
    `streams info` can show no members there (docs/kafka.md); fails the day tansu does."""
    make_topic(broker, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"{topic}.live",
            "session.timeout.ms": 6000,  # the rejoin tansu asks for waits about this long
            "log_level": 0,
        }
    )
    consumer.subscribe([topic])
    try:
        wait_sync(lambda: consumer.poll(0.1) or consumer.assignment(), 30, "an assignment")
        admin = kafkaops.admin_client(broker.bootstrap)
        assert f"{topic}.live" not in kafkaops.group_offsets(admin)
        assert kafkaops.group_members(admin, [f"{topic}.live"]) == {f"{topic}.live": []}
    finally:
        consumer.close()
