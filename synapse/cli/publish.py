"""``synapse publish``: validate an event against its schema, say where it goes, then write it
(XADD on Redis; one record produced with ``acks=all`` on Kafka, through ``cli/store.py``).

Writes that would bypass the router are refused unless ``--force``: to a destination of
a route (no validation, no fan-out) or to the dead-letter stream (it would list as a
dead letter with no reason). On a source, the router's own dry run says where the event
would go; one that would go nowhere (``no_route``) is refused too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from synapse import files
from synapse.cli import common
from synapse.cli.dryrun import Verdict, dry_run
from synapse.cli.store import open_store
from synapse.config import RoutingTable
from synapse.errors import InvalidEvent, UsageError
from synapse.events import parse
from synapse.kafka.url import backend_kind
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
@click.option(
    "--key", help="Kafka: the record's key (records with one key stay in order on one partition)."
)
@click.option("--no-validate", is_flag=True, help="Skip the schema and routing checks.")
@click.option(
    "--force",
    is_flag=True,
    help="Write even to a destination or the dead-letter stream, or an event no route takes.",
)
def publish(
    config_path: Path,
    as_json: bool,
    stream: str,
    data: str | None,
    event_type: str | None,
    file: Path | None,
    extra: tuple[str, ...],
    key: str | None,
    no_validate: bool,
    force: bool,
) -> None:
    """XADD one event (JSON body from DATA, --file or -) after checking it; print the id.

    Refused (exit 1, every schema error listed) when the body does not validate. On a
    source it says where the router would send the event, and refuses one that would go
    nowhere; a write to a route's destination or to the dead-letter stream bypasses the
    router and is refused. --force writes anyway.

    On Kafka (--url kafka://...) the event is one record: the body its value, the type and
    --field its headers, --key its key; the id printed is <partition>-<offset>. The table
    is checked with Kafka's topic-name rules.

    \b
    Examples:
      synapse publish ingress --type model.ready '{"model_id": "m1", "version": "1.0"}'
      synapse publish ingress --file event.json --field trace=abc
      synapse --url kafka://localhost:9092 publish ingress --key m1 --file event.json
    """
    raw = _body(data, file)
    url = common.resolved_url()
    kind = backend_kind(url) if url else "redis"
    if key is not None and kind != "kafka":
        raise UsageError("--key is for Kafka (a kafka:// URL): a stream entry has no key")
    if no_validate:
        table = common.table_or_none(config_path, kind)
    else:
        table = common.table(config_path, kind)
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
    bypass = _bypass(table, stream) if table is not None else None
    if bypass and not force:
        _refuse(as_json, stream, [f"{bypass}; pass --force to write it anyway"])
    if not no_validate and table is not None:
        errors = _problems(table, fields)
        if errors:
            _refuse(as_json, stream, errors)
    verdict = None
    if table is not None and not bypass and _is_source(table, stream):
        verdict = dry_run(table, stream, fields)
        if verdict.outcome != "routed" and not no_validate and not force:
            _refuse(as_json, stream, [f"{_nowhere(verdict)}; pass --force to publish anyway"])
    store = open_store(data_field=data_field.encode())
    entry_id = store.append(stream, fields, key.encode() if key is not None else None)
    where = _where(table, stream, verdict, bypass)
    if as_json:
        dests = [d for d, _ in verdict.destinations] if verdict is not None else []
        common.emit_json(
            {"published": True, "stream": stream, "id": entry_id, "destinations": dests}
        )
    else:
        click.echo(entry_id)
        if where:
            click.echo(where, err=True)


def _refuse(as_json: bool, stream: str, errors: list[str]) -> None:
    if as_json:
        common.emit_json({"published": False, "stream": stream, "errors": errors})
    else:
        click.echo(f"synapse: refused: {errors[0]}", err=True)
        for err in errors[1:]:
            click.echo(f"  {err}", err=True)
    sys.exit(common.EXIT_FAILED)


def _bypass(table: RoutingTable, stream: str) -> str | None:
    """Why a write to ``stream`` would bypass the router, or None."""
    if stream == table.settings.dead_letter:
        return (
            f"{stream} is the dead-letter stream: the entry would list as a dead letter "
            "with no reason"
        )
    routes = [r.name for r in table.routes if stream in r.to]
    if routes:
        return (
            f"{stream} is a destination (route {', '.join(routes)}): a write there skips "
            f"validation and fan-out; publish to a source ({', '.join(table.sources)})"
        )
    if stream == table.settings.unrouted:
        return f"{stream} is where unrouted events go: a write there skips the router"
    return None


def _is_source(table: RoutingTable, stream: str) -> bool:
    return any(test(stream) for test in table.source_globs)


def _nowhere(verdict: Verdict) -> str:
    if verdict.outcome == "dropped":
        return (
            f"no route takes type {verdict.event_type!r} from {verdict.source}: the router "
            "would drop it (unrouted: drop)"
        )
    return (
        f"the router would dead-letter it ({verdict.reason}: {verdict.error})"
        if verdict.reason != "no_route"
        else f"no route takes type {verdict.event_type!r} from {verdict.source}: the router "
        "would dead-letter it (no_route)"
    )


def _where(
    table: RoutingTable | None, stream: str, verdict: Verdict | None, bypass: str | None
) -> str | None:
    """One line for stderr: where the router will send the event, if anywhere."""
    if table is None:
        return None
    if bypass:
        return f"note: written to {stream} with --force, bypassing the router"
    if verdict is None:
        return f"note: {stream} is not a source of {table.path}: the router does not read it"
    if verdict.outcome == "routed":
        return "routes to " + ", ".join(f"{d} (via {r})" for d, r in verdict.destinations)
    return f"note: {_nowhere(verdict)}"


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
