"""``synapse dlq redrive`` on Kafka (tansu): once per dead letter, keys kept, retry topics,
redrive counts."""

from __future__ import annotations

import json
from pathlib import Path

from synapse.tansu import TansuBroker
from tests.kafka.cli import as_json, kafka_cli, write_dead_letters
from tests.kafka.support import read_back


def test_redrive_writes_the_original_once_and_list_shows_what_is_left(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """redrive produces each dead letter's original fields (no synapse-*) with its key to its
    source, marks it handled: list shows none left, a rerun redrives nothing; --dry-run
    changes nothing."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    ids = write_dead_letters(broker, f"{topic}.dlq", 2, source=topic, key=b"m-key")
    dry = cli("dlq", "redrive", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would redrive {ids[0]} -> {topic}" in dry.stdout
    assert as_json(cli("dlq", "list", "--json"))["total"] == 2
    done = cli("dlq", "redrive", "--json")
    assert done.exit_code == 0, done.output
    report = as_json(done)
    assert (report["redriven"], report["not_atomic"]) == (2, 2)
    assert [e["id"] for e in report["entries"]] == ids
    got = read_back(broker.bootstrap, topic, 2)
    assert [json.loads(g.value or b"") for g in got] == [{"model_id": "m0"}, {"model_id": "m1"}]
    assert got[0].key == b"m-key" and got[0].headers == {"type": b"model.ready", "n": b"0"}
    assert as_json(cli("dlq", "list", "--json"))["total"] == 0
    rerun = cli("dlq", "redrive")
    assert rerun.exit_code == 0 and f"redrive {topic}.dlq: redriven 0, refused 0" in rerun.stdout
    assert "not atomically" not in rerun.stderr


def test_handler_dead_letter_goes_to_the_services_retry_topic(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """A dead letter with synapse-consumer is redriven to synapse.retry.<service> only."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    service = topic.replace("t.", "svc-", 1)[:60]
    [letter] = write_dead_letters(
        broker,
        f"{topic}.dlq",
        1,
        reason="handler_error",
        source=f"{topic}.models",
        consumer=service,
    )
    done = as_json(cli("dlq", "redrive", "--id", letter, "--json"))
    assert [e["to"] for e in done["entries"]] == [f"synapse.retry.{service}"]
    [got] = read_back(broker.bootstrap, f"synapse.retry.{service}", 1)
    assert json.loads(got.value or b"") == {"model_id": "m0"}


def test_redrive_count_follows_the_copy_and_the_limit_refuses(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """The copy's redrive count is kept in synapse.marks under its new id: the router's dead
    letter of that copy lists with redrives 1, and --max-redrives 1 refuses it (exit 1)."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    write_dead_letters(broker, f"{topic}.dlq", 1, source=topic)
    [entry] = as_json(cli("dlq", "redrive", "--json"))["entries"]
    # the router dead-letters the copy again: its synapse-id is the copy's id
    [again] = write_dead_letters(broker, f"{topic}.dlq", 1, source=topic, source_id=entry["new_id"])
    [listed] = as_json(cli("dlq", "list", "--json"))["entries"]
    assert (listed["id"], listed["redrives"]) == (again, 1)
    refused = cli("dlq", "redrive", "--max-redrives", "1")
    assert refused.exit_code == 1
    assert f"refused {again}: already redriven 1 times (limit 1; --force)" in refused.stderr


def test_redrive_refuses_targets_kafka_cannot_have(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """--to a name Kafka cannot have, or a handler dead letter whose service has no legal retry
    topic: refused (exit 1, the dead letter stays outstanding)."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    [plain] = write_dead_letters(broker, f"{topic}.dlq", 1, source=topic)
    [handler] = write_dead_letters(
        broker, f"{topic}.dlq", 1, reason="handler_error", source=topic, consumer="svc:a"
    )
    to_bad = cli("dlq", "redrive", "--id", plain, "--to", "bad:name")
    assert to_bad.exit_code == 1
    assert f"refused {plain}: 'bad:name' cannot be a Kafka topic" in to_bad.stderr
    no_retry = cli("dlq", "redrive", "--id", handler)
    assert no_retry.exit_code == 1
    assert "service 'svc:a' has no legal retry topic" in no_retry.stderr
    assert as_json(cli("dlq", "list", "--json"))["total"] == 2
