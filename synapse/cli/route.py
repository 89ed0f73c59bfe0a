"""``synapse route``: dry-run one event through the routing table (no Redis)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from synapse import files
from synapse.cli import common
from synapse.cli.dryrun import Verdict, default_source, dry_run, event_fields
from synapse.errors import UsageError


@click.command()
@common.config_option
@common.json_option
@common.debug_option
@click.argument("event", default="-", metavar="EVENT.json|-")
@click.option("--type", "event_type", help="Event type (default: the body's type field).")
@click.option("--source", help="Source stream (default: the table's first source).")
@click.option(
    "--fields",
    "as_fields",
    is_flag=True,
    help="EVENT is a JSON object of raw entry fields, not the body.",
)
def route(
    config_path: Path,
    as_json: bool,
    event: str,
    event_type: str | None,
    source: str | None,
    as_fields: bool,
) -> None:
    """Show where one event would go: matched routes, why not the others, schema verdict.

    Exit 0 when the event would be routed (or dropped by policy), 1 when it would be
    dead-lettered.

    \b
    Examples:
      echo '{"model_id": "m1", "version": "1"}' | synapse route --type model.ready -
      synapse route event.json --source ingress:eu --json
    """
    table = common.table(config_path)
    raw = _read(event)
    if as_fields:
        fields = _raw_fields(raw)
        if event_type is not None:
            fields += (table.settings.type_field.encode(), event_type.encode())
    else:
        fields = event_fields(table, event_type=event_type, raw=raw)
    verdict = dry_run(table, source or default_source(table), fields)
    if as_json:
        common.emit_json(verdict.as_json())
    else:
        for line in render(verdict):
            click.echo(line)
    sys.exit(common.EXIT_FAILED if verdict.outcome == "dead_letter" else common.EXIT_OK)


def _read(event: str) -> bytes:
    try:
        return files.read_input(event, sys.stdin.buffer)
    except files.TooLarge as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read {event}: {exc.strerror or exc}") from None


def _raw_fields(raw: bytes) -> list[bytes]:
    try:
        mapping = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--fields needs a JSON object of strings: {exc}") from None
    if not isinstance(mapping, dict):
        raise UsageError("--fields needs a JSON object of strings")
    out: list[bytes] = []
    for name, value in mapping.items():
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        out += (name.encode(), text.encode())
    return out


def render(verdict: Verdict) -> list[str]:
    """The human form of a verdict."""
    lines = [f"event:   {verdict.event_type or '(no type)'} from {verdict.source}"]
    if verdict.schema is None:
        lines.append("schema:  none for this type")
    elif not verdict.schema_errors:
        lines.append(f"schema:  {verdict.schema}: valid")
    else:
        count = common.plural(len(verdict.schema_errors), "error")
        lines.append(f"schema:  {verdict.schema}: INVALID ({count})")
        lines += [f"           {e}" for e in verdict.schema_errors]
    if verdict.routes:
        lines.append("routes:")
        for info in verdict.routes:
            if info["matched"]:
                lines.append(f"  + {info['route']} -> {', '.join(info['to'])}")
            else:
                lines.append(f"  - {info['route']}: {info['why_not']}")
    if verdict.outcome == "routed":
        dests = ", ".join(f"{d} (via {r})" for d, r in verdict.destinations)
        lines.append(f"result:  routed to {dests}")
    elif verdict.outcome == "dropped":
        lines.append(f"result:  dropped ({verdict.reason}: unrouted policy is drop)")
    else:
        lines.append(f"result:  dead letter: {verdict.reason}: {verdict.error}")
    return lines
