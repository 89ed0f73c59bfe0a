"""The sources of a table on the server: names and globs resolved, groups, gauges.

Literal source names are always sources (their group is created with MKSTREAM);
globs match existing streams (SCAN TYPE stream). A stream found by a glob is
skipped, with one warning per name and a count in ``synapse_sources_skipped``,
when its name is not valid UTF-8 (anyone who can create a key could otherwise
stop every read) or when the router writes it (a destination, the unrouted or the
dead-letter stream: a loop; ``loops.py`` refuses such a table at load too).
Group creation treats an existing group (BUSYGROUP) as success.
Per-source lag and pending gauges come from XINFO GROUPS, on an interval, not per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from synapse import log as logging
from synapse import wire
from synapse.config import RouterSettings, RoutingTable
from synapse.errors import Failure
from synapse.failures import classify
from synapse.loops import UNROUTED_POLICIES
from synapse.matching import is_glob
from synapse.metrics import Metrics


async def discover(
    client: wire.Client,
    table: RoutingTable,
    known: Sequence[str],
    *,
    create: bool,
    metrics: Metrics,
    log: logging.Logger,
    skipped: set[bytes] | None = None,
) -> list[str]:
    """Resolve source names and globs to streams; create missing groups; the sources found.

    With ``create``, every found source's group is ensured; else only new ones'.
    ``skipped`` remembers the names already warned about (one warning per name).
    """
    excluded = written_by(table)
    warned = set() if skipped is None else skipped
    found: list[str] = []
    for pattern in table.sources:
        if not is_glob(pattern):
            found.append(pattern)
            continue
        async for key in client.scan_iter(match=pattern, count=1000, _type="stream"):
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                _skip(warned, key, "invalid_name", pattern, metrics, log)
                continue
            if name in excluded:
                _skip(warned, key, "write_target", pattern, metrics, log)
                continue
            found.append(name)
    found = list(dict.fromkeys(found))
    new = [s for s in found if s not in known]
    if create:
        new = found
    literal = {p for p in table.sources if not is_glob(p)}
    for source in new:
        await ensure_group(
            client, table.settings, source, mkstream=source in literal, metrics=metrics, log=log
        )
    if new and not create:
        log.info("sources_added", sources=new)
    gone = [s for s in known if s not in found]
    if gone:
        log.info("sources_removed", sources=gone)
    metrics.sources.set(len(found))
    return found


def written_by(table: RoutingTable) -> frozenset[str]:
    """Every stream the router writes under ``table``: never one of its sources."""
    unrouted = table.settings.unrouted
    extra = () if unrouted in UNROUTED_POLICIES else (unrouted,)
    return table.destinations | {table.settings.dead_letter, *extra}


#: Names remembered for "warn once"; past this many the memory is cleared (and warns again).
MAX_SKIPPED_NAMES = 10_000


def _skip(
    warned: set[bytes], key: bytes, reason: str, pattern: str, metrics: Metrics, log: logging.Logger
) -> None:
    """Leave a globbed stream out of the sources: warn once per name, count each new one."""
    if key in warned:
        return
    if len(warned) >= MAX_SKIPPED_NAMES:
        warned.clear()
    warned.add(key)
    metrics.sources_skipped.labels(reason).inc()
    log.warning("source_skipped", stream=repr(key)[2:-1], reason=reason, glob=pattern)


async def ensure_group(
    client: wire.Client,
    settings: RouterSettings,
    source: str,
    *,
    mkstream: bool,
    metrics: Metrics,
    log: logging.Logger,
) -> None:
    """Create the group on ``source`` at the ``start`` policy; an existing group is fine."""
    start = "0" if settings.start == "earliest" else "$"
    args: list[Any] = ["XGROUP", "CREATE", source, settings.group, start]
    if mkstream:
        args.append("MKSTREAM")
    try:
        await wire.execute(client, *args)
    except ResponseError as exc:
        # an existing group is fine; so is a globbed stream deleted since the scan
        if classify(exc) in (Failure.GROUP_EXISTS, Failure.NO_KEY):
            return
        raise
    metrics.group_recreated.labels(source).inc()
    log.info("group_created", source=source, group=settings.group, start=settings.start)


async def refresh_stats(
    client: wire.Client, sources: Sequence[str], group: str, metrics: Metrics
) -> None:
    """Per-source lag and pending from XINFO GROUPS (on an interval, not per batch)."""
    name = group.encode()
    for source in sources:
        try:
            groups = await client.xinfo_groups(source)
        except ResponseError:
            continue
        for info in groups:
            if info.get("name") == name:
                metrics.pending.labels(source).set(info.get("pending") or 0)
                lag = info.get("lag")
                if lag is not None:
                    metrics.lag.labels(source).set(lag)
