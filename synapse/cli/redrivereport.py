"""What ``synapse dlq redrive`` refuses, how it walks the selection, and how it reports
and exits, on every store (``cli/redrive.py`` on Redis, ``cli/kafkaredrive.py``)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable
from typing import NoReturn

import click

from synapse import keys
from synapse.cli import common
from synapse.cli.againcheck import Again
from synapse.cli.deadletter import DeadLetter, Selection, redrive_fields
from synapse.cli.progress import Progress

#: One dead letter to redrive: the letter, its destination, the copy's fields, the copy's
#: redrive count.
Pending = tuple[DeadLetter, str, list[bytes], int]


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


def walk(
    letters: Iterable[DeadLetter],
    destination: Callable[[DeadLetter], tuple[DeadLetter, str, str]],
    flush: Callable[[], None],
    pending: list[Pending],
    *,
    target: str | None,
    limit: int | None,
    batch_size: int,
    guard: tuple[int, bool],
    tally: Counter[str],
    refused: list[dict[str, str]],
    progress: Progress,
) -> None:
    """Take up to ``limit`` letters: ``destination`` gives each one (its redrive count read)
    with where it goes, or why it cannot; a refusal (that, ``refusal`` under ``guard`` =
    (max redrives, force)) is noted, the rest queued in ``pending`` and ``flush``-ed by
    ``batch_size``. Ctrl-C stops the walk (``tally["interrupted"]``)."""
    max_redrives, force = guard
    with progress:
        try:
            for each in letters:
                if limit is not None and tally["selected"] >= limit:
                    break
                tally["selected"] += 1
                letter, dest, why = destination(each)
                why = why or refusal(letter, max_redrives, force)
                if why:
                    tally["refused"] += 1
                    refused.append({"id": letter.entry_id, "why": why})
                    progress.advance(1)
                    continue
                pending.append((letter, dest, redrive_fields(letter, target), letter.redrives + 1))
                if len(pending) >= batch_size:
                    flush()
            flush()
        except KeyboardInterrupt:
            tally["interrupted"] = 1


def finish(
    stream: str,
    tally: Counter[str],
    refused: list[dict[str, str]],
    moved: list[dict[str, str]],
    *,
    target: str | None,
    chosen: Selection,
    again: Again | None,
    as_json: bool,
    dry_run: bool,
) -> NoReturn:
    """Report, audit (``dlq_redriven``) and exit: 130 when interrupted, 1 when any letter
    was refused, else 0."""
    report("redrive", stream, tally, refused, moved, as_json, dry_run, again)
    common.audit(
        "dlq_redriven",
        stream=stream,
        dry_run=dry_run,
        redriven=tally["redriven"],
        refused=len(refused),
        already_gone=tally["gone"],
        to=target,
        reasons=list(chosen.reasons),
        would_fail_again=again.same.total() if again is not None else None,
        interrupted=bool(tally["interrupted"]),
    )
    if tally["interrupted"]:
        sys.exit(common.EXIT_INTERRUPTED)
    sys.exit(common.EXIT_FAILED if refused else common.EXIT_OK)
