"""``synapse services``: the service registry (services and routers, with heartbeats).

A consuming service's row also shows its group's pending entries and lag on each
stream it reads (summed in the table, per stream in ``--json``). On a ``kafka://``
URL the registry is the ``synapse.registry`` topic (``backends/kafkaregistry.py``)
and the lag is end offsets minus the group's committed offsets (``cli/kafkastore.py``,
as ``synapse streams`` shows it; Kafka has no pending list: ``-``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from synapse import registry, settings, wire
from synapse.cli import common
from synapse.cli.store import open_store
from synapse.client.seam import check_url
from synapse.kafka.url import backend_kind
from synapse.kafka.url import parse as parse_kafka


def store_url() -> str:
    """The URL by flag > env > state file: Redis, or Kafka (``kafka://``, with
    confluent-kafka installed)."""
    url = common.store_url()
    return check_url(url) if backend_kind(url) == "kafka" else url


async def fetch(url: str) -> list[registry.Registration]:
    """The registry at ``url`` (one server, a cluster for ``redis+cluster://``, or the
    registry topic for ``kafka://``)."""
    if backend_kind(url) == "kafka":
        from synapse.backends import kafkaregistry

        bootstrap = parse_kafka(url).bootstrap
        return await asyncio.to_thread(kafkaregistry.list_services, bootstrap)
    client = wire.connect_any(url, read_timeout_s=30, password=settings.password())
    try:
        return await registry.list_services(client)
    finally:
        await client.aclose()


def live_services() -> list[registry.Registration]:
    """The registry as it is now (expired instances are already gone)."""
    url = store_url()
    click.get_current_context().meta["synapse.resolved_url"] = url
    return asyncio.run(fetch(url))


def group_lag(found: list[registry.Registration]) -> dict[tuple[str, str], dict[str, int | None]]:
    """(group, stream) -> pending and lag, for every consuming service's streams, as
    ``synapse streams info`` reads them (the CLI's store: ``XINFO GROUPS`` on Redis, end
    offsets minus the group's committed offsets on Kafka, which has no pending list)."""
    wanted = {(r.info.group, stream) for r in found if r.info.group for stream in r.info.consumes}
    out: dict[tuple[str, str], dict[str, int | None]] = {}
    if not wanted:
        return out
    store = open_store()
    for stream in sorted({s for _, s in wanted}):
        if not store.exists(stream):
            continue  # no such stream yet
        for group in store.info(stream)["groups"]:
            if (group["name"], stream) in wanted:
                out[(group["name"], stream)] = {"pending": group["pending"], "lag": group["lag"]}
    return out


def _sum(values: list[int | None]) -> str:
    known = [v for v in values if v is not None]
    return str(sum(known)) if known else "-"


@click.command()
@common.connection_options
@common.json_option
@common.debug_option
def services(as_json: bool) -> None:
    """Registered services and routers: what they produce and consume, last heartbeat.

    A consuming service shows its group's pending entries and lag.

    \b
    Examples:
      synapse services
      synapse services --json | jq '.services[] | select(.kind == "service")'
    """
    found = live_services()
    lags = group_lag(found)

    def lag_of(reg: registry.Registration) -> dict[str, dict[str, int | None]]:
        return {
            s: lags[(reg.info.group, s)] for s in reg.info.consumes if (reg.info.group, s) in lags
        }

    if as_json:
        rows: list[dict[str, Any]] = [{**r.as_json(), "streams": lag_of(r)} for r in found]
        common.emit_json({"services": rows})
        return
    if not found:
        click.echo("no services registered")
        return
    now = int(time.time() * 1000)
    table = []
    for r in found:
        streams = lag_of(r).values()
        table.append(
            [
                r.info.name,
                r.info.instance,
                r.info.kind,
                r.info.version or "-",
                f"{max(0, now - r.heartbeat_ms) / 1000:.1f}s ago",
                ",".join(r.info.consumes) or "-",
                _sum([s["pending"] for s in streams]) if r.info.group else "-",
                _sum([s["lag"] for s in streams]) if r.info.group else "-",
                ",".join(r.info.produces) or "-",
                ",".join(r.info.publishes) or (r.info.config and f"config {r.info.config}") or "-",
            ]
        )
    header = ["NAME", "INSTANCE", "KIND", "VERSION", "HEARTBEAT", "CONSUMES", "PENDING", "LAG",
              "PRODUCES", "TYPES"]  # fmt: skip
    for line in common.table_rows(table, header):
        click.echo(line)
