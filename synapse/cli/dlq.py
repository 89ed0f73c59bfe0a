"""``synapse dlq``: list, show, redrive and purge dead letters (redrive: cli/redrive.py)."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click

from synapse import keys
from synapse.cli import common
from synapse.cli.deadletter import (
    DeadLetter,
    Selection,
    dlq_options,
    selection_options,
    stream_name,
)
from synapse.cli.dlqstore import RedisDeadLetters, open_dead_letters
from synapse.cli.progress import Progress
from synapse.cli.redrive import redrive_cmd


@click.group()
def dlq() -> None:
    """Dead letters: list, show, redrive, purge.

    On Kafka (--url kafka://...) dead letters are records of the dead-letter topic
    (default synapse.dlq), ids <partition>-<offset>; records cannot be deleted, so redrive
    and purge mark them handled (topic synapse.marks) and list shows what is outstanding.

    \b
    Examples:
      synapse dlq list --reason schema_violation --since -2h
      synapse dlq redrive --reason destination_error --dry-run
      synapse --url kafka://localhost:9092 dlq show 0-42
    """


dlq.add_command(redrive_cmd)


@dlq.command("list")
@dlq_options
@selection_options
@click.option("--limit", default=50, show_default=True, help="Entries to show (0: all).")
def list_cmd(
    config_path: Path,
    as_json: bool,
    stream: str | None,
    chosen: Selection,
    limit: int,
) -> None:
    """Dead letters, oldest first, with counts by reason.

    \b
    Examples:
      synapse dlq list
      synapse dlq list --reason no_route --source ingress --since -1d --limit 0 --json
    """
    name = stream_name(stream, config_path)
    letters = open_dead_letters(name)
    shown: list[DeadLetter] = []
    by_reason: Counter[str] = Counter()
    for letter in letters.select(chosen):
        by_reason[letter.get(keys.F_REASON)] += 1
        if not limit or len(shown) < limit:
            shown.append(letter)
    total = sum(by_reason.values())
    shown = letters.counted(shown)
    if as_json:
        common.emit_json(
            {
                "stream": name,
                "total": total,
                "by_reason": dict(by_reason),
                "entries": [letter.as_json() for letter in shown],
            }
        )
        return
    if not total:
        click.echo(f"{name}: no dead letters")
        return
    rows = []
    for letter in shown:
        info = letter.as_json()
        error = info["error"] if len(info["error"]) <= 60 else info["error"][:57] + "..."
        rows.append(
            [
                info["id"],
                info["reason"],
                info["source"],
                info["type"] or "-",
                str(info["redrives"]),
                "yes" if info["truncated"] else "",
                error,
            ]
        )
    header = ["ID", "REASON", "SOURCE", "TYPE", "REDRIVES", "TRUNC", "ERROR"]
    for line in common.table_rows(rows, header):
        click.echo(line)
    counts = ", ".join(f"{r} {n}" for r, n in by_reason.most_common())
    more = f" (showing {len(shown)})" if len(shown) < total else ""
    click.echo(f"{common.plural(total, 'dead letter')} in {name}{more}: {counts}")


@dlq.command("show")
@dlq_options
@click.argument("entry_id", metavar="ID")
def show_cmd(config_path: Path, as_json: bool, stream: str | None, entry_id: str) -> None:
    """One dead letter: why, where from, and every original field (ID: an entry id; on
    Kafka <partition>-<offset>).

    \b
    Examples:
      synapse dlq show 1714564800000-0
      synapse --url kafka://localhost:9092 dlq show 0-42
    """
    name = stream_name(stream, config_path)
    letters = open_dead_letters(name)
    found = letters.counted(list(letters.select(Selection(), ids=(entry_id,))))
    if not found:
        raise common.Failure(f"no dead letter {entry_id} in {name}")
    letter = found[0]
    if as_json:
        common.emit_json(letter.as_json(full=True))
        return
    info = letter.as_json()
    for key in ("id", "time", "reason", "error", "source", "source_id", "deliveries", "redrives"):
        click.echo(f"{key + ':':12} {info[key]}")
    if info["truncated"]:
        click.echo(f"{'truncated:':12} {info['truncated']} (cannot be redriven)")
    if "key" in info:  # Kafka: the record's key, kept on a redriven copy
        click.echo(f"{'key:':12} {info['key']}")
    click.echo("fields:")
    for i in range(0, len(letter.original()) - 1, 2):
        name_, value = letter.original()[i], letter.original()[i + 1]
        click.echo(f"  {common.text(name_)}: {common.text(value)}")


@dlq.command("purge")
@dlq_options
@selection_options
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.option("--dry-run", is_flag=True, help="Count what would go; delete nothing.")
def purge_cmd(
    config_path: Path,
    as_json: bool,
    stream: str | None,
    chosen: Selection,
    yes: bool,
    dry_run: bool,
) -> None:
    """Delete dead letters (all, or those matching the filters); asks first unless --yes.

    On Kafka, where a record cannot be deleted, purge marks them handled (synapse.marks):
    dlq list no longer shows them; the topic's retention removes the records.

    \b
    Examples:
      synapse dlq purge --reason no_route --dry-run
      synapse dlq purge --reason no_route --until -7d --yes
    """
    name = stream_name(stream, config_path)
    letters = open_dead_letters(name)
    selected = list(letters.select(chosen))
    matched = [letter.entry_id for letter in selected]
    if dry_run or not matched:
        if as_json:
            common.emit_json(
                {"stream": name, "dry_run": dry_run, "matched": len(matched), "deleted": 0}
            )
        else:
            click.echo(
                f"purge {name}: {common.plural(len(matched), 'dead letter')} would be deleted"
                if dry_run
                else f"purge {name}: nothing to delete"
            )
        return
    if not yes:
        click.confirm(
            f"Delete {common.plural(len(matched), 'dead letter')} from {name}?",
            abort=True,
            err=True,
        )
    deleted = 0
    with Progress("purging", as_json, total=len(matched)) as progress:
        try:
            if not isinstance(letters, RedisDeadLetters):
                deleted = _mark_purged(letters, selected, progress)
            elif not chosen.narrowed:
                # Everything up to the newest entry seen: dead letters written since stay.
                deleted = int(
                    common.call(letters.client, "XTRIM", name, "MINID", common.next_id(matched[-1]))
                )
                progress.advance(deleted)
            else:
                for i in range(0, len(matched), 500):
                    deleted += int(letters.client.xdel(name, *matched[i : i + 500]))
                    progress.advance(len(matched[i : i + 500]))
        except KeyboardInterrupt:
            click.echo(f"purge {name}: interrupted after {deleted}", err=True)
            sys.exit(common.EXIT_INTERRUPTED)
    if as_json:
        common.emit_json(
            {"stream": name, "dry_run": False, "matched": len(matched), "deleted": deleted}
        )
    else:
        if isinstance(letters, RedisDeadLetters):
            click.echo(f"purge {name}: deleted {deleted}")
        else:
            click.echo(
                f"purge {name}: marked {deleted} handled (Kafka keeps the records until the "
                "topic's retention; dlq list no longer shows them)"
            )
    common.audit(
        "dlq_purged",
        stream=name,
        deleted=deleted,
        reasons=list(chosen.reasons),
        sources=list(chosen.sources),
        since=chosen.since,
        until=chosen.until,
    )


def _mark_purged(letters: object, selected: list[DeadLetter], progress: Progress) -> int:
    """Kafka: mark each selected dead letter purged, 500 marks at a time; how many."""
    from synapse.cli.kafkadlq import KafkaDeadLetters

    assert isinstance(letters, KafkaDeadLetters)
    for i in range(0, len(selected), 500):
        letters.settle([(letter, {"action": "purged"}) for letter in selected[i : i + 500]])
        progress.advance(len(selected[i : i + 500]))
    return len(selected)
