"""``synapse dlq redrive`` on Kafka: produce each dead letter's original, then mark it handled.

Each selected dead letter (outstanding: no handled mark yet) is produced with ``acks=all``
to its source topic, the destination it records (``synapse-destination``), the retry
topic of the service whose handler gave up (``synapse-consumer``:
``synapse.retry.<service>``), or ``--to``; the dead letter's key is kept. Once a batch's
copies are acknowledged, each dead letter is marked handled in ``synapse.marks`` (what
``dlq list`` leaves out) and each copy's redrive count recorded there. Producing and
marking are not one transaction: a kill between the two leaves the dead letter
outstanding, and a rerun redrives it again (at least once; dedupe on the event's ``id``).
Refusals and the report are the Redis command's (``cli/redrive.py``).
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import NoReturn

import click

from synapse.backends import kafkaadmin
from synapse.cli import common
from synapse.cli.againcheck import first_pass
from synapse.cli.deadletter import DeadLetter, Selection, redrive_fields, target_of
from synapse.cli.kafkadlq import open_kafka_dead_letters
from synapse.cli.progress import Progress
from synapse.cli.redrive import BATCH
from synapse.cli.redrivereport import refusal, report
from synapse.config import RoutingTable
from synapse.kafka.names import topic_problem
from synapse.kafka.records import entry_id, to_record


def redrive_on_kafka(
    name: str,
    table: RoutingTable | None,
    chosen: Selection,
    ids: tuple[str, ...],
    target: str | None,
    *,
    dry_run: bool,
    pace: tuple[float | None, int | None],
    force: bool,
    max_redrives: int,
    as_json: bool,
) -> NoReturn:
    """Redrive, report, audit and exit (0, 1 when any was refused, 130 on Ctrl-C)."""
    rate, limit = pace
    letters = open_kafka_dead_letters(name)
    store = letters.store
    tally: Counter[str] = Counter(on_kafka=1)
    refused: list[dict[str, str]] = []
    moved: list[dict[str, str]] = []
    pacer = common.Pacer(rate)
    batch_size = max(1, min(BATCH, int(rate) // 10)) if rate else BATCH
    pending: list[tuple[DeadLetter, str, list[bytes], int]] = []

    def flush() -> None:
        if dry_run:
            for letter, dest, _, _ in pending:
                moved.append({"id": letter.entry_id, "to": dest, "new_id": ""})
                tally["would_redrive"] += 1
        elif pending:
            kafkaadmin.ensure_topics(store.bootstrap, sorted({dest for _, dest, _, _ in pending}))
            done: list[list[tuple[int, int]]] = [[] for _ in pending]
            for (letter, dest, fields, _), acked in zip(pending, done, strict=True):
                store.sender.send(dest, to_record(fields, letter.key, store.data_field), acked)
            store.sender.settle()
            new_ids = [entry_id(*acked[0]).decode() for acked in done]
            letters.settle(
                [
                    (letter, {"action": "redriven", "to": dest, "new_id": new_id})
                    for (letter, dest, _, _), new_id in zip(pending, new_ids, strict=True)
                ]
            )
            letters.count_copies(
                [
                    (dest, new_id, n)
                    for (_, dest, _, n), new_id in zip(pending, new_ids, strict=True)
                ]
            )
            for (letter, dest, _, _), new_id in zip(pending, new_ids, strict=True):
                moved.append({"id": letter.entry_id, "to": dest, "new_id": new_id})
            tally["redriven"] += len(pending)
            tally["apart"] += len(pending)
        progress.advance(len(pending))
        pacer.wait(max(1, len(pending)))
        pending.clear()

    progress = Progress("redriving", as_json)
    again = first_pass(letters, chosen, ids, target, table, limit, progress)
    if again is not None and not as_json and again.line():
        click.echo(again.line(), err=True)
    with progress:
        try:
            for letter in letters.select(chosen, ids):
                if limit is not None and tally["selected"] >= limit:
                    break
                tally["selected"] += 1
                [letter] = letters.counted([letter])
                dest, why = target_of(letter, target, table, letters.retry)
                why = why or _illegal(dest) or refusal(letter, max_redrives, force)
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
    report("redrive", name, tally, refused, moved, as_json, dry_run, again)
    common.audit(
        "dlq_redriven",
        stream=name,
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


def _illegal(dest: str) -> str:
    why = topic_problem(dest)
    return f"{dest!r} cannot be a Kafka topic: {why}" if why else ""
