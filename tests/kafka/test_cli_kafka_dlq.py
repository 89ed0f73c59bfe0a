"""``synapse dlq list | show | purge`` on Kafka (tansu): outstanding dead letters, marks."""

from __future__ import annotations

from pathlib import Path

from synapse.tansu import TansuBroker
from tests.kafka.cli import as_json, kafka_cli, write_dead_letters


def test_list_and_show_dead_letters_with_partition_offset_ids(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """dlq list shows the dead-letter topic's records (ids <partition>-<offset>, reason, source,
    key) with counts by reason; dlq show one of them with its original fields."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    ids = write_dead_letters(broker, f"{topic}.dlq", 2, source=topic)
    ids += write_dead_letters(broker, f"{topic}.dlq", 1, reason="no_route", source=topic)
    listed = cli("dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    data = as_json(listed)
    assert data["stream"] == f"{topic}.dlq" and data["total"] == 3
    assert data["by_reason"] == {"schema_violation": 2, "no_route": 1}
    assert [e["id"] for e in data["entries"]] == ids
    assert data["entries"][0]["source"] == topic and data["entries"][0]["key"] == "k"
    narrowed = as_json(cli("dlq", "list", "--reason", "no_route", "--json"))
    assert [e["id"] for e in narrowed["entries"]] == ids[2:]
    text = cli("dlq", "list")
    assert text.stdout.splitlines()[-1] == (
        f"3 dead letters in {topic}.dlq: schema_violation 2, no_route 1"
    )
    shown = cli("dlq", "show", ids[1])
    assert shown.exit_code == 0, shown.output
    assert f"id:          {ids[1]}" in shown.stdout and "key:         k" in shown.stdout
    assert "  n: 1" in shown.stdout and '  data: {"model_id": "m1"}' in shown.stdout


def test_bad_ids_and_times_are_usage_errors(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """On Kafka a dead-letter id is <partition>-<offset> and --since a time: anything else is
    exit 2 naming the format; an id with no record is exit 1."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    write_dead_letters(broker, f"{topic}.dlq", 1, source=topic)
    bad_id = cli("dlq", "show", "abc")
    assert bad_id.exit_code == 2 and "expected <partition>-<offset>" in bad_id.stderr
    bad_since = cli("dlq", "list", "--since", "yesterday-ish")
    assert bad_since.exit_code == 2 and "cannot read time 'yesterday-ish'" in bad_since.stderr
    id_since = cli("dlq", "list", "--since", "0-5")
    assert id_since.exit_code == 2 and "takes a time" in id_since.stderr
    missing = cli("dlq", "show", "0-999")
    assert missing.exit_code == 1 and f"no dead letter 0-999 in {topic}.dlq" in missing.stderr


def test_purge_marks_dead_letters_handled_and_list_shows_the_rest(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """dlq purge on Kafka marks the matched dead letters handled (records cannot be deleted):
    list and show no longer find them; the others stay outstanding; --since filters by time."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    ids = write_dead_letters(broker, f"{topic}.dlq", 2, source=topic)
    ids += write_dead_letters(broker, f"{topic}.dlq", 1, reason="no_route", source=topic)
    dry = as_json(cli("dlq", "purge", "--reason", "schema_violation", "--dry-run", "--json"))
    assert dry == {"stream": f"{topic}.dlq", "dry_run": True, "matched": 2, "deleted": 0}
    done = cli("dlq", "purge", "--reason", "schema_violation", "--yes")
    assert done.exit_code == 0, done.output
    assert f"purge {topic}.dlq: marked 2 handled" in done.stdout
    assert [e["id"] for e in as_json(cli("dlq", "list", "--json"))["entries"]] == ids[2:]
    assert cli("dlq", "show", ids[0]).exit_code == 1
    assert as_json(cli("dlq", "list", "--since", "-1h", "--json"))["total"] == 1
    assert as_json(cli("dlq", "list", "--until", "-1h", "--json"))["total"] == 0
