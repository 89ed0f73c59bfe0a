"""``synapse services``: the service registry (services and routers, with heartbeats)."""

from __future__ import annotations

import asyncio
import time

import click

from synapse import registry, settings, wire
from synapse.cli import common


async def fetch(url: str) -> list[registry.Registration]:
    """The registry at ``url`` (one server, or a cluster for ``redis+cluster://``)."""
    client = wire.connect_any(url, read_timeout_s=30, password=settings.password())
    try:
        return await registry.list_services(client)
    finally:
        await client.aclose()


def live_services() -> list[registry.Registration]:
    """The registry as it is now (expired instances are already gone)."""
    url = common.redis_url()
    click.get_current_context().meta["synapse.resolved_url"] = url
    return asyncio.run(fetch(url))


@click.command()
@common.connection_options
@common.json_option
@common.debug_option
def services(as_json: bool) -> None:
    """Registered services and routers: what they produce and consume, last heartbeat."""
    found = live_services()
    if as_json:
        common.emit_json({"services": [r.as_json() for r in found]})
        return
    if not found:
        click.echo("no services registered")
        return
    now = int(time.time() * 1000)
    rows = [
        [
            r.info.name,
            r.info.instance,
            r.info.kind,
            r.info.version or "-",
            r.info.config or "-",
            f"{max(0, now - r.heartbeat_ms) / 1000:.1f}s ago",
            ",".join(r.info.consumes) or "-",
            ",".join(r.info.produces) or "-",
        ]
        for r in found
    ]
    header = ["NAME", "INSTANCE", "KIND", "VERSION", "CONFIG", "HEARTBEAT", "CONSUMES", "PRODUCES"]
    for line in common.table_rows(rows, header):
        click.echo(line)
