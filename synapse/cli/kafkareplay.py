"""``synapse replay`` on Kafka: copy a topic's records to another topic, with provenance.

Bounds: ``--since``/``--until`` take a time (the broker's ``offsets_for_times`` gives each
partition's start; records whose timestamp is outside the bounds are skipped as they
are read, since tansu answers offset 0 for any time) or a record id
``<partition>-<offset>``, which bounds that partition only (both inclusive). Without
``--until`` a partition is read to its end as it is when reached.

Each copy keeps the record's key and carries ``synapse-replay-of`` (``<partition>-
<offset>``) and ``synapse-replay-source``. The checkpoint (``synapse.marks``,
``replay/<source>|<dest>|<filter hash>``: the next offset per partition) is written
after each page of copies is acknowledged: there is no transaction, so a replay killed
between a page and its checkpoint copies that page again when rerun (at least once;
dedupe on the two replay headers). ``--restart`` ignores the checkpoint.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import click

from synapse.backends import kafkaadmin, kafkaops
from synapse.backends.kafkamarks import Marks, replay_key
from synapse.cli import common
from synapse.cli.kafkadlq import kafka_time, within
from synapse.cli.kafkastore import KafkaStore
from synapse.cli.progress import Progress
from synapse.cli.replay import legacy_key, report
from synapse.config import RoutingTable
from synapse.errors import UsageError
from synapse.kafka.names import topic_problem
from synapse.kafka.records import entry_id, to_record

PAGE = 200
_RECORD_ID = re.compile(r"(\d+)-(\d+)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Bound:
    """``--since`` or ``--until``: a time (ms), or one partition's offset."""

    ms: int | None = None
    partition: int | None = None
    offset: int | None = None


def bound(value: str | None, option: str) -> Bound:
    if value is None:
        return Bound()
    found = _RECORD_ID.fullmatch(value.strip())
    if found:
        return Bound(partition=int(found.group(1)), offset=int(found.group(2)))
    try:
        return Bound(ms=kafka_time(value, option))
    except UsageError:
        raise UsageError(
            f"cannot read {option} {value!r}: on Kafka use a time (ISO 8601 "
            "2024-05-01T12:00:00Z, relative -2h, ms since the epoch) or a record id "
            "<partition>-<offset> (bounds that partition)"
        ) from None


@dataclass(slots=True)
class Run:
    """What one replay did."""

    tally: Counter[str]
    first: str = ""
    last: str = ""
    resumed: str | None = None
    checkpoint: str = ""


def replay_kafka(
    store: KafkaStore,
    *,
    source: str,
    dest: str,
    since: str | None,
    until: str | None,
    digest: str,
    matches: Callable[[list[bytes]], bool] | None,
    copy: Callable[[list[bytes], bytes], list[bytes]],
    rate: float | None,
    limit: int | None,
    dry_run: bool,
    restart: bool,
    progress: Progress,
) -> Run:
    """Copy ``source`` to ``dest`` (``matches(fields)`` decides, None: every record;
    ``copy(fields, id)`` lays out the copy); Ctrl-C stops it (``tally["interrupted"]``)."""
    start_at, end_at = bound(since, "--since"), bound(until, "--until")
    why = topic_problem(dest)
    if why:
        raise UsageError(f"--to: {why}")
    marks = store.marks(source)
    starts = {p: lo for p, (lo, _) in marks.items()}
    ends: dict[int, int] = {}
    if start_at.ms is not None:
        found = kafkaops.offsets_for_time(
            store.reader, source, {p: hi for p, (_, hi) in marks.items()}, start_at.ms
        )
        starts = {p: max(lo, found.get(p, lo)) for p, lo in starts.items()}
    if start_at.partition is not None:
        _known(start_at.partition, marks, "--since")
        starts[start_at.partition] = max(starts[start_at.partition], start_at.offset or 0)
    if end_at.partition is not None:
        _known(end_at.partition, marks, "--until")
        ends[end_at.partition] = (end_at.offset or 0) + 1
    book = Marks(store.bootstrap, store.sender)
    key = replay_key(source, dest, digest)
    run = Run(tally=Counter(), checkpoint=f"{book.topic}:{key}")
    if not restart:
        saved = book.load("replay/").get(key, {}).get("next", {})
        ahead = {
            int(p): int(o) for p, o in saved.items() if int(p) in starts and int(o) > starts[int(p)]
        }
        if ahead:
            starts.update(ahead)
            run.resumed = ",".join(f"{p}-{o - 1}" for p, o in sorted(ahead.items()))
    if progress.shown:
        # from the broker's end offsets (exact where they are: tansu under-reports them)
        progress.total = sum(
            max(0, min(hi, ends.get(p, hi)) - starts[p]) for p, (_, hi) in marks.items()
        )
        if limit is not None and matches is None:
            progress.total = min(progress.total, limit)
    if not dry_run:
        kafkaadmin.ensure_topics(store.bootstrap, [dest])
    pacer = common.Pacer(rate)
    page = max(1, min(PAGE, int(rate) // 10)) if rate else PAGE
    copies: list[tuple[bytes | None, list[bytes]]] = []
    considered: dict[int, int] = {}
    tally = run.tally

    def flush() -> None:
        if not dry_run and (copies or considered):
            for record_key, fields in copies:
                store.sender.send(dest, to_record(fields, record_key, store.data_field))
            store.sender.settle()
            book.put(
                key, {"next": {str(p): o for p, o in considered.items()}, "copied": tally["copied"]}
            )
        progress.advance(tally["scanned"] - progress.done)
        pacer.wait(max(1, len(copies)))
        copies.clear()

    try:
        for msg in kafkaops.read(store.reader, source, starts, ends):
            if limit is not None and tally["copied"] >= limit:
                break
            record = store.record(msg)
            partition, offset = msg.partition() or 0, msg.offset() or 0
            considered[partition] = offset + 1
            tally["scanned"] += 1
            wanted = matches is None or matches(record.fields)
            if not wanted or not within(record.ms, start_at.ms, end_at.ms):
                tally["skipped"] += 1
            else:
                rid = entry_id(partition, offset)
                copies.append((record.key, copy(record.fields, rid)))
                tally["copied"] += 1
                run.first = run.first or rid.decode()
                run.last = rid.decode()
            if len(copies) >= page:
                flush()
        flush()
    except KeyboardInterrupt:
        tally["interrupted"] = 1
    return run


def _known(partition: int, marks: dict[int, tuple[int, int]], option: str) -> None:
    if partition not in marks:
        raise UsageError(f"{option}: the topic has no partition {partition} (0..{len(marks) - 1})")


def run_on_kafka(
    source: str,
    dest: str,
    bounds: tuple[str | None, str | None],
    filters: tuple[str | None, str | None],
    table: RoutingTable | None,
    matches: Callable[[list[bytes]], bool],
    copy: Callable[[list[bytes], bytes], list[bytes]],
    *,
    rate: float | None,
    limit: int | None,
    dry_run: bool,
    restart: bool,
    as_json: bool,
) -> NoReturn:
    """The Kafka run (``cli/kafkareplay.py``), reported and audited as on Redis."""
    url = common.store_url()
    ctx = click.get_current_context()
    ctx.meta["synapse.resolved_url"] = url
    data_field = table.settings.data_field.encode() if table is not None else b"data"
    store = KafkaStore(url, data_field=data_field)
    ctx.call_on_close(store.close)
    store.partitions(source)  # no such topic: a Failure before anything else
    (since, until), (type_glob, where) = bounds, filters
    digest = legacy_key(source, dest, type_glob, where).rsplit("|", 1)[1]
    progress = Progress("replaying", as_json)
    with progress:
        run = replay_kafka(
            store,
            source=source,
            dest=dest,
            since=since,
            until=until,
            digest=digest,
            matches=matches if type_glob or where else None,
            copy=copy,
            rate=rate,
            limit=limit,
            dry_run=dry_run,
            restart=restart,
            progress=progress,
        )
    tally = run.tally
    report(source, dest, tally, run.resumed, run.first, run.last, run.checkpoint, dry_run, as_json)
    common.audit(
        "replay_done",
        source=source,
        to=dest,
        dry_run=dry_run,
        copied=0 if dry_run else tally["copied"],
        skipped=tally["skipped"],
        first_id=run.first or None,
        last_id=run.last or None,
        resumed_after=run.resumed,
        interrupted=bool(tally["interrupted"]),
    )
    sys.exit(common.EXIT_INTERRUPTED if tally["interrupted"] else common.EXIT_OK)
