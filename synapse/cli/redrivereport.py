"""What ``synapse dlq redrive`` refuses, how it walks the selection, and how it reports
and exits, on every store (``cli/redrive.py`` on Redis, ``cli/kafkaredrive.py``)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn

import click

from synapse import keys
from synapse.cli import common
from synapse.cli.againcheck import Again, first_pass
from synapse.cli.deadletter import DeadLetter, Selection, redrive_fields
from synapse.cli.dlqstore import DeadLetters
from synapse.cli.progress import Progress
from synapse.config import RoutingTable

#: Dead letters written per batch (fewer under ``--rate``: a tenth of a second's worth).
BATCH = 50

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What ``synapse dlq redrive`` was asked, on any store."""

    stream: str
    table: RoutingTable | None
    chosen: Selection
    ids: tuple[str, ...]
    target: str | None
    dry_run: bool
    rate: float | None
    limit: int | None
    force: bool
    max_redrives: int
    as_json: bool


class Run:
    """One redrive on any store: the first pass (``againcheck``), the walk over the
    selection with its refusals, batches of ``BATCH`` (fewer under ``--rate``) handed to
    the store's ``write`` (a dry run writes nothing), the report, the audit and the exit."""

    def __init__(self, request: Request, tally: Counter[str]) -> None:
        self.request = request
        self.tally = tally
        self.refused: list[dict[str, str]] = []
        self.moved: list[dict[str, str]] = []
        self.pending: list[Pending] = []
        self.pacer = common.Pacer(request.rate)
        rate = request.rate
        self.batch_size = max(1, min(BATCH, int(rate) // 10)) if rate else BATCH
        self.progress = Progress("redriving", request.as_json)

    def __call__(
        self,
        letters: Iterable[DeadLetter],
        first: DeadLetters,
        destination: Callable[[DeadLetter], tuple[DeadLetter, str, str]],
        write: Callable[[list[Pending]], None],
    ) -> NoReturn:
        """Redrive ``letters``: ``first`` gives the first pass its selection, ``destination``
        each letter (its redrive count read) with where it goes or why it cannot,
        ``write`` a batch (noting what became of each in ``tally``, ``moved``,
        ``refused``)."""
        r = self.request
        again = first_pass(first, r.chosen, r.ids, r.target, r.table, r.limit, self.progress)
        if again is not None and not r.as_json and again.line():
            click.echo(again.line(), err=True)
        with self.progress:
            try:
                for each in letters:
                    if r.limit is not None and self.tally["selected"] >= r.limit:
                        break
                    self.tally["selected"] += 1
                    letter, dest, why = destination(each)
                    why = why or refusal(letter, r.max_redrives, r.force)
                    if why:
                        self.tally["refused"] += 1
                        self.refused.append({"id": letter.entry_id, "why": why})
                        self.progress.advance(1)
                        continue
                    copy = redrive_fields(letter, r.target)
                    self.pending.append((letter, dest, copy, letter.redrives + 1))
                    if len(self.pending) >= self.batch_size:
                        self._flush(write)
                self._flush(write)
            except KeyboardInterrupt:
                self.tally["interrupted"] = 1
        self._finish(again)

    def _flush(self, write: Callable[[list[Pending]], None]) -> None:
        if not self.pending:
            return
        if self.request.dry_run:
            for letter, dest, _, _ in self.pending:
                self.moved.append({"id": letter.entry_id, "to": dest, "new_id": ""})
                self.tally["would_redrive"] += 1
        else:
            write(self.pending)
        self.progress.advance(len(self.pending))
        self.pacer.wait(len(self.pending))
        self.pending.clear()

    def _finish(self, again: Again | None) -> NoReturn:
        """Report, audit (``dlq_redriven``) and exit: 130 when interrupted, 1 when any
        letter was refused, else 0."""
        r, tally, refused = self.request, self.tally, self.refused
        report("redrive", r.stream, tally, refused, self.moved, r.as_json, r.dry_run, again)
        common.audit(
            "dlq_redriven",
            stream=r.stream,
            dry_run=r.dry_run,
            redriven=tally["redriven"],
            refused=len(refused),
            already_gone=tally["gone"],
            to=r.target,
            reasons=list(r.chosen.reasons),
            would_fail_again=again.same.total() if again is not None else None,
            interrupted=bool(tally["interrupted"]),
        )
        if tally["interrupted"]:
            sys.exit(common.EXIT_INTERRUPTED)
        sys.exit(common.EXIT_FAILED if refused else common.EXIT_OK)
