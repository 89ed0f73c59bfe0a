"""``synapse streams``, ``streams info NAME`` and ``tail NAME``: look at streams."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import orjson

from synapse.cli import common
from synapse.errors import InvalidEvent
from synapse.events import Limits, pairs, parse
from synapse.matching import compile_glob


def stream_names(client: common.Client, match: str = "*") -> list[str]:
    names = {common.text(k) for k in client.scan_iter(match=match, count=1000, _type="stream")}
    return sorted(names)


def groups_of(client: common.Client, name: str) -> list[dict[str, Any]]:
    """XINFO GROUPS with each group's consumers, as plain JSON-able dicts."""
    out = []
    for g in client.xinfo_groups(name):
        group = common.text(g["name"])
        consumers = [
            {
                "name": common.text(c["name"]),
                "pending": int(c["pending"]),
                "idle_ms": int(c["idle"]),
            }
            for c in client.xinfo_consumers(name, group)
        ]
        lag = g.get("lag")
        out.append(
            {
                "name": group,
                "consumers": consumers,
                "pending": int(g["pending"]),
                "lag": None if lag is None else int(lag),
                "last_delivered_id": common.text(g.get("last-delivered-id")),
                "entries_read": g.get("entries-read"),
            }
        )
    return out


def info_of(client: common.Client, name: str) -> dict[str, Any]:
    """Length, first/last entry, groups; raises Failure when there is no such stream."""
    if client.type(name) != b"stream":
        raise common.Failure(f"no stream {name!r}")
    info = client.xinfo_stream(name)
    first = info.get("first-entry")
    last = info.get("last-entry")
    first_id = common.text(first[0]) if first else None
    last_id = common.text(last[0]) if last else None
    return {
        "name": name,
        "length": int(info["length"]),
        "first_id": first_id,
        "first_time": common.id_time(first_id),
        "last_id": last_id,
        "last_time": common.id_time(last_id),
        "last_generated_id": common.text(info.get("last-generated-id")),
        "oldest_age_s": _age_s(first_id),
        "groups": groups_of(client, name),
    }


@click.group(invoke_without_command=True)
@common.connection_options
@common.json_option
@common.debug_option
@click.option("--match", default="*", show_default=True, help="Only streams matching this glob.")
@click.pass_context
def streams(ctx: click.Context, as_json: bool, match: str) -> None:
    """List streams: length, age of the oldest entry, first/last entry time, groups, pending, lag.

    \b
    Examples:
      synapse streams
      synapse streams --match 'ingress*' --json
      synapse streams info ingress
    """
    if ctx.invoked_subcommand is not None:
        return
    client = common.connect()
    rows = [info_of(client, name) for name in stream_names(client, match)]
    if as_json:
        common.emit_json({"streams": rows})
        return
    if not rows:
        click.echo("no streams")
        return
    lines = [
        [
            r["name"],
            str(r["length"]),
            human_age(r["oldest_age_s"]),
            r["first_time"],
            r["last_time"],
            str(len(r["groups"])),
            str(sum(g["pending"] for g in r["groups"])),
            _lag(r["groups"]),
        ]
        for r in rows
    ]
    header = ["STREAM", "LENGTH", "AGE", "FIRST", "LAST", "GROUPS", "PENDING", "LAG"]
    for line in common.table_rows(lines, header):
        click.echo(line)


def _age_s(entry_id: str | None) -> float | None:
    """Seconds since the entry id's time (None for no entry)."""
    if entry_id is None:
        return None
    return max(0.0, round(time.time() - common.id_key(entry_id)[0] / 1000, 3))


def human_age(age_s: float | None) -> str:
    """``3d4h``, ``5h12m``, ``42s``: the two largest units (``-`` for none)."""
    if age_s is None:
        return "-"
    left, parts = int(age_s), list[str]()
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2:
            break
    return "".join(parts)


def _lag(groups: list[dict[str, Any]]) -> str:
    lags = [g["lag"] for g in groups]
    if not lags:
        return "-"
    if any(lag is None for lag in lags):
        return "?"
    return str(max(lags))


@streams.command("info")
@common.connection_options
@common.json_option
@common.debug_option
@click.argument("name")
def info_cmd(as_json: bool, name: str) -> None:
    """One stream: length, first/last entry, each group with its consumers, pending, lag.

    \b
    Example:
      synapse streams info ingress --json
    """
    data = info_of(common.connect(), name)
    if as_json:
        common.emit_json(data)
        return
    click.echo(f"stream:  {data['name']}")
    click.echo(f"length:  {data['length']}")
    click.echo(
        f"first:   {data['first_id'] or '-'}  {data['first_time']}"
        f"  (oldest age {human_age(data['oldest_age_s'])})"
    )
    click.echo(f"last:    {data['last_id'] or '-'}  {data['last_time']}")
    if not data["groups"]:
        click.echo("groups:  none")
    for g in data["groups"]:
        lag = "?" if g["lag"] is None else g["lag"]
        consumers = common.plural(len(g["consumers"]), "consumer")
        click.echo(
            f"group {g['name']}: pending {g['pending']}, lag {lag}, "
            f"last delivered {g['last_delivered_id']}, {consumers}"
        )
        for c in g["consumers"]:
            click.echo(f"  {c['name']}: pending {c['pending']}, idle {c['idle_ms']} ms")


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

    Ctrl-C stops --follow (exit 130).

    \b
    Examples:
      synapse tail model-events -n 5
      synapse tail ingress --follow --type 'model.*'
    """
    client = common.connect()
    if not follow and client.type(name) != b"stream":
        raise common.Failure(f"no stream {name!r}")
    wanted = compile_glob(type_glob) if type_glob else None
    last = "$"
    if count > 0:
        window = count if not wanted else max(1000, count * 20)
        reply = common.call(client, "XREVRANGE", name, "+", "-", "COUNT", window)
        entries = [(e[0], pairs(e[1])) for e in reversed(reply)]
        shown = [e for e in entries if _wanted(e[1], wanted)][-count:]
        for entry_id, fields in shown:
            _show(entry_id, fields, as_json)
        if entries:
            last = common.text(entries[-1][0])
    if not follow:
        return
    try:
        while True:
            reply = common.call(client, "XREAD", "COUNT", 100, "BLOCK", 1000, "STREAMS", name, last)
            for _, found in reply or []:
                for entry_id, flat in found:
                    fields = pairs(flat)
                    last = common.text(entry_id)
                    if _wanted(fields, wanted):
                        _show(entry_id, fields, as_json)
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


def _show(entry_id: bytes, fields: dict[bytes, bytes], as_json: bool) -> None:
    event_type, body = _type_and_body(fields)
    others = {common.text(k): common.text(v) for k, v in fields.items() if k not in (b"data",)}
    if as_json:
        common.emit_json(
            {
                "id": common.text(entry_id),
                "time": common.id_time(entry_id),
                "type": event_type,
                "body": body if b"data" in fields else None,
                "fields": {common.text(k): common.text(v) for k, v in fields.items()},
            }
        )
        return
    click.echo(f"{common.text(entry_id)}  {common.id_time(entry_id)}  {event_type or '-'}")
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
