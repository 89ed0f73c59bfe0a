"""``synapse streams``, ``streams info NAME`` and ``tail NAME``: look at streams or topics.

Everything is asked of the store (``cli/store.py``: Redis streams or Kafka topics) and
formatted here once. On Kafka a row also has the topic's partitions, the router group's
lag and the other groups' largest lag; ``--exact`` counts records by reading the topic
instead of trusting the broker's end offsets (which tansu under-reports).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from synapse.cli import common
from synapse.cli.redisstore import RedisStore
from synapse.cli.store import Store, open_store
from synapse.kafka.url import backend_kind


def exact_option(func: Any) -> Any:
    return click.option(
        "--exact",
        is_flag=True,
        help="Kafka: count records and lag by reading the topics, not from end offsets.",
    )(func)


@click.group(invoke_without_command=True)
@common.connection_options
@common.json_option
@common.debug_option
@common.config_option
@click.option("--match", default="*", show_default=True, help="Only streams matching this glob.")
@exact_option
@click.pass_context
def streams(ctx: click.Context, as_json: bool, config_path: Path, match: str, exact: bool) -> None:
    """List streams: length, age of the oldest entry, first/last entry time, groups, pending, lag.

    On Kafka (--url kafka://...): topics, with partitions, the router group's lag and the
    other groups' largest lag; lengths and lags from the broker's end offsets, or counted
    by reading with --exact.

    \b
    Examples:
      synapse streams
      synapse streams --match 'ingress*' --json
      synapse streams info ingress
      synapse --url kafka://localhost:9092 streams --exact
    """
    if ctx.invoked_subcommand is not None:
        return
    store = opened(config_path, exact)
    rows = [store.info(name) for name in store.names(match)]
    if as_json:
        common.emit_json({"streams": rows})
        return
    if not rows:
        click.echo(f"no {store.noun}s")
        return
    if store.kind == "kafka":
        _kafka_rows(rows)
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


def stream_names(client: common.Client, match: str = "*") -> list[str]:
    """The Redis streams matching ``match`` (for ``topology``)."""
    return RedisStore(client).names(match)


def groups_of(client: common.Client, name: str) -> list[dict[str, Any]]:
    """A Redis stream's groups with their consumers (for ``topology``)."""
    return RedisStore(client).groups(name)


def opened(config_path: Path, exact: bool = False) -> Store:
    """The store; on Kafka with the table's router group and data field (defaults when
    the table is absent or broken: looking at topics does not need it)."""
    table = None
    if backend_kind(common.store_url()) == "kafka":
        try:
            table = common.table_or_none(config_path, "kafka")
        except common.Failure:
            table = None
    if table is None:
        return open_store(exact=exact)
    return open_store(
        exact=exact,
        router_group=table.settings.group,
        data_field=table.settings.data_field.encode(),
    )


def _kafka_rows(rows: list[dict[str, Any]]) -> None:
    lines = [
        [
            r["name"],
            str(len(r["partitions"])),
            str(r["length"]),
            human_age(r["oldest_age_s"]),
            r["first_time"],
            r["last_time"],
            str(len(r["groups"])),
            _lag([g for g in r["groups"] if g["router"]]),
            _lag([g for g in r["groups"] if not g["router"]]),
        ]
        for r in rows
    ]
    header = [
        "TOPIC",
        "PARTITIONS",
        "LENGTH",
        "AGE",
        "FIRST",
        "LAST",
        "GROUPS",
        "ROUTER LAG",
        "LAG",
    ]
    for line in common.table_rows(lines, header):
        click.echo(line)
    if not rows[0]["exact"]:
        click.echo(END_OFFSETS_NOTE, err=True)


#: Said under a Kafka listing that was not counted by reading.
END_OFFSETS_NOTE = (
    "note: lengths and lags are the broker's end offsets, which some brokers (tansu) "
    "under-report; --exact counts them by reading"
)


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
@common.config_option
@exact_option
@click.argument("name")
def info_cmd(as_json: bool, config_path: Path, exact: bool, name: str) -> None:
    """One stream: length, first/last entry, each group with its consumers, pending, lag.

    On Kafka: a topic, each partition's offsets, each group's committed offsets and lag
    (the router group marked); --exact counts by reading.

    \b
    Examples:
      synapse streams info ingress --json
      synapse --url kafka://localhost:9092 streams info ingress --exact
    """
    store = opened(config_path, exact)
    data = store.info(name)
    if as_json:
        common.emit_json(data)
        return
    if store.kind == "kafka":
        _kafka_info(data)
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


def _kafka_info(data: dict[str, Any]) -> None:
    click.echo(f"topic:   {data['name']}")
    counted = "counted by reading" if data["exact"] else "from the broker's end offsets"
    click.echo(f"length:  {data['length']} ({counted})")
    click.echo(
        f"first:   {data['first_id'] or '-'}  {data['first_time']}"
        f"  (oldest age {human_age(data['oldest_age_s'])})"
    )
    click.echo(f"last:    {data['last_id'] or '-'}  {data['last_time']}")
    for p in data["partitions"]:
        click.echo(
            f"partition {p['partition']}: offsets {p['first_offset']}..{p['end_offset']}, "
            f"{p['length']} records"
        )
    if not data["groups"]:
        click.echo("groups:  none")
    for g in data["groups"]:
        router = " (router)" if g["router"] else ""
        committed = ", ".join(f"{p}@{o}" for p, o in g["committed"].items())
        members = common.plural(len(g["consumers"]), "member")
        click.echo(f"group {g['name']}{router}: lag {g['lag']}, committed {committed}, {members}")
        for c in g["consumers"]:
            parts = ",".join(str(p) for p in c["partitions"]) or "none"
            click.echo(f"  {c['name']} ({c['host']}): partitions {parts}")
    if not data["exact"]:
        click.echo(END_OFFSETS_NOTE, err=True)
