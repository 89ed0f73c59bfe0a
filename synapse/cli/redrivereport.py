"""What ``synapse dlq redrive`` refuses and how it reports, on every store."""

from __future__ import annotations

from collections import Counter

import click

from synapse import keys
from synapse.cli import common
from synapse.cli.againcheck import Again
from synapse.cli.deadletter import DeadLetter


def refusal(letter: DeadLetter, max_redrives: int, force: bool) -> str:
    truncated = letter.get(keys.F_TRUNCATED)
    if truncated:
        return f"truncated ({truncated}): the original is gone; see dlq show {letter.entry_id}"
    if letter.redrives >= max_redrives and not force:
        return f"already redriven {letter.redrives} times (limit {max_redrives}; --force)"
    return ""


def report(
    what: str,
    stream: str,
    tally: Counter[str],
    refused: list[dict[str, str]],
    moved: list[dict[str, str]],
    as_json: bool,
    dry_run: bool,
    again: Again | None = None,
) -> None:
    if as_json:
        common.emit_json(
            {
                "stream": stream,
                "dry_run": dry_run,
                "would_fail_again": again.as_json() if again is not None else None,
                "interrupted": bool(tally["interrupted"]),
                "selected": tally["selected"],
                "redriven": tally["redriven"],
                "would_redrive": tally["would_redrive"],
                "already_gone": tally["gone"],
                "not_atomic": tally["apart"],
                "refused": refused,
                "entries": moved,
            }
        )
        return
    if dry_run:
        for item in moved:
            click.echo(f"would redrive {item['id']} -> {item['to']}")
    for item in refused:
        click.echo(f"refused {item['id']}: {item['why']}", err=True)
    done = tally["would_redrive"] if dry_run else tally["redriven"]
    verb = "would redrive" if dry_run else "redriven"
    parts = [f"{verb} {done}", f"refused {len(refused)}"]
    if tally["gone"]:
        parts.append(f"already gone {tally['gone']}")
    if tally["apart"] and tally["on_kafka"]:
        click.echo(
            f"note: on Kafka each copy is written, then its dead letter marked handled "
            f"({tally['apart']}, not atomically): a kill between the two would redrive one twice",
            err=True,
        )
    elif tally["apart"]:
        click.echo(
            f"note: {tally['apart']} written then deleted, not atomically (target not in "
            f"{stream}'s cluster hash slot): a kill between the two would redrive one twice",
            err=True,
        )
    if tally["interrupted"]:
        parts.append("interrupted: rerun to continue (nothing lost)")
    click.echo(f"{what} {stream}: {', '.join(parts)}")
