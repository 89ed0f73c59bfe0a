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

from collections import Counter
from typing import NoReturn

from synapse.backends import kafkaadmin
from synapse.cli.deadletter import DeadLetter, target_of
from synapse.cli.kafkadlq import open_kafka_dead_letters
from synapse.cli.redrivereport import Pending, Request, Run
from synapse.kafka.names import topic_problem
from synapse.kafka.records import entry_id, to_record


def redrive_on_kafka(request: Request) -> NoReturn:
    """Redrive, report, audit and exit (0, 1 when any was refused, 130 on Ctrl-C)."""
    letters = open_kafka_dead_letters(request.stream)
    store = letters.store
    run = Run(request, Counter(on_kafka=1))

    def write(pending: list[Pending]) -> None:
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
            [(dest, new_id, n) for (_, dest, _, n), new_id in zip(pending, new_ids, strict=True)]
        )
        for (letter, dest, _, _), new_id in zip(pending, new_ids, strict=True):
            run.moved.append({"id": letter.entry_id, "to": dest, "new_id": new_id})
        run.tally["redriven"] += len(pending)
        run.tally["apart"] += len(pending)

    def destination(letter: DeadLetter) -> tuple[DeadLetter, str, str]:
        [letter] = letters.counted([letter])
        dest, why = target_of(letter, request.target, request.table, letters.retry)
        return letter, dest, why or _illegal(dest)

    run(letters.select(request.chosen, request.ids), letters, destination, write)


def _illegal(dest: str) -> str:
    why = topic_problem(dest)
    return f"{dest!r} cannot be a Kafka topic: {why}" if why else ""
