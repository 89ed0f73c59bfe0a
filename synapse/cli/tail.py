"""``synapse tail NAME [--follow]``: the last entries of a stream or topic, then new ones."""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from synapse.cli import common
from synapse.cli.store import Record, open_store
from synapse.errors import InvalidEvent
from synapse.events import Limits, pairs, parse
from synapse.matching import compile_glob


@click.command()
@common.connection_options
@common.json_option
@common.debug_option
@click.argument("name")
@click.option("-n", "--count", default=10, show_default=True, help="Entries to show first.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries (Ctrl-C stops).")
@click.option("--type", "type_glob", help="Only events whose type matches this glob.")
def tail(as_json: bool, name: str, count: int, follow: bool, type_glob: str | None) -> None:
    """The last entries of a stream, JSON bodies pretty-printed; --follow for new ones.

    Ctrl-C stops --follow (exit 130). On Kafka: the last records of a topic by timestamp
    across its partitions, ids <partition>-<offset>, with the record's key.

    \b
    Examples:
      synapse tail model-events -n 5
      synapse tail ingress --follow --type 'model.*'
      synapse --url kafka://localhost:9092 tail model-events -n 5
    """
    store = open_store()
    if (not follow or store.kind == "kafka") and not store.exists(name):
        raise common.Failure(f"no {store.noun} {name!r}")
    wanted = compile_glob(type_glob) if type_glob else None

    def keep(record: Record) -> bool:
        return _wanted(pairs(record.fields), wanted)

    shown, cursor = store.last(name, count, keep if wanted else None)
    for record in shown:
        _show(record, as_json)
    if not follow:
        return
    try:
        for batch in store.follow(name, cursor):
            for record in batch:
                if keep(record):
                    _show(record, as_json)
            sys.stdout.flush()
    except KeyboardInterrupt:  # Ctrl-C is how --follow ends: 130, as for every command
        sys.stdout.flush()
        sys.exit(common.EXIT_INTERRUPTED)


def _type_and_body(fields: dict[bytes, bytes]) -> tuple[str | None, Any]:
    flat = [x for pair in fields.items() for x in pair]
    try:
        return parse(flat, Limits())
    except InvalidEvent:
        return common.text(fields.get(b"type")) or None, None


def _wanted(fields: dict[bytes, bytes], wanted: Any) -> bool:
    if wanted is None:
        return True
    event_type, _ = _type_and_body(fields)
    return event_type is not None and bool(wanted(event_type))


def _show(record: Record, as_json: bool) -> None:
    fields = pairs(record.fields)
    event_type, body = _type_and_body(fields)
    others = {common.text(k): common.text(v) for k, v in fields.items() if k not in (b"data",)}
    if as_json:
        shown: dict[str, Any] = {
            "id": record.id,
            "time": record.time,
            "type": event_type,
            "body": body if b"data" in fields else None,
            "fields": {common.text(k): common.text(v) for k, v in fields.items()},
        }
        if record.key is not None:
            shown["key"] = common.text(record.key)
        common.emit_json(shown)
        return
    click.echo(f"{record.id}  {record.time}  {event_type or '-'}")
    if record.key is not None:
        click.echo(f"  key: {common.text(record.key)}")
    for key, value in others.items():
        if key != "type":
            click.echo(f"  {key}: {value}")
    if b"data" in fields:
        if body is not None:
            pretty = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
        else:
            pretty = common.text(fields[b"data"])
        for line in pretty.splitlines():
            click.echo(f"  {line}")
