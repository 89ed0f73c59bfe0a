"""``synapse publish``: validate an event against its schema, then XADD it."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from synapse import files
from synapse.cli import common
from synapse.config import RoutingTable
from synapse.errors import InvalidEvent, UsageError
from synapse.events import parse
from synapse.plan import limits_of


@click.command()
@common.config_option
@common.connection_options
@common.json_option
@common.debug_option
@click.argument("stream")
@click.argument("data", required=False, metavar="[DATA|-]")
@click.option("--type", "event_type", help="Event type (default: the body's type field).")
@click.option("--file", "file", type=click.Path(path_type=Path), help="Read the body from FILE.")
@click.option(
    "--field", "extra", multiple=True, metavar="NAME=VALUE", help="Another entry field (repeat)."
)
@click.option("--no-validate", is_flag=True, help="Skip the schema check.")
def publish(
    config_path: Path,
    as_json: bool,
    stream: str,
    data: str | None,
    event_type: str | None,
    file: Path | None,
    extra: tuple[str, ...],
    no_validate: bool,
) -> None:
    """XADD one event (JSON body from DATA, --file or -) after checking it; print the id.

    Refused (exit 1, every schema error listed) when the body does not validate.
    """
    raw = _body(data, file)
    table = common.table(config_path) if not no_validate else common.table_or_none(config_path)
    type_field = table.settings.type_field if table else "type"
    data_field = table.settings.data_field if table else "data"
    fields: list[bytes] = []
    if event_type:
        fields += (type_field.encode(), event_type.encode())
    fields += (data_field.encode(), raw)
    for item in extra:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--field takes NAME=VALUE, got {item!r}")
        fields += (name.encode(), value.encode())
    if not no_validate and table is not None:
        errors = _problems(table, fields)
        if errors:
            if as_json:
                common.emit_json({"published": False, "stream": stream, "errors": errors})
            else:
                click.echo(f"synapse: refused: {errors[0]}", err=True)
                for err in errors[1:]:
                    click.echo(f"  {err}", err=True)
            sys.exit(common.EXIT_FAILED)
    client = common.connect()
    entry_id = common.text(client.xadd(stream, dict(zip(fields[::2], fields[1::2], strict=True))))
    if as_json:
        common.emit_json({"published": True, "stream": stream, "id": entry_id})
    else:
        click.echo(entry_id)


def _body(data: str | None, file: Path | None) -> bytes:
    if file is not None and data is not None:
        raise UsageError("give the body as DATA, --file or -, not two of them")
    if file is not None or data == "-":
        try:
            return files.read_input(str(file) if file is not None else "-", sys.stdin.buffer)
        except files.TooLarge as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None
    if data is None:
        raise UsageError("no body: give DATA, --file FILE or - (stdin)")
    return data.encode()


def _problems(table: RoutingTable, fields: list[bytes]) -> list[str]:
    """Why the router would refuse these fields: parse errors, then every schema error."""
    try:
        event_type, body = parse(fields, limits_of(table))
    except InvalidEvent as exc:
        return [f"{exc.reason}: {exc.detail}"]
    schema = table.schemas.schema_for(event_type)
    if schema is None:
        if table.settings.require_schema:
            return [f"unknown_schema: no schema for type {event_type!r}"]
        return []
    if schema.fast.is_valid(body):
        return []
    return [f"schema_violation: {schema.name} {e}" for e in schema.errors(body)] or [
        f"schema_violation: {schema.name}"
    ]
