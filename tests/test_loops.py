"""Routing loops: no stream the router writes may be read by it, at load and at every rescan."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from synapse.config import RoutingTable, load_table
from synapse.errors import ConfigError
from synapse.metrics import Metrics
from tests.conftest import ROOT, running, wait_for, write_table

LOOPS = [
    # (sources, router block, route to, expected line needle, expected message part)
    ("[ingress]", "unrouted: ingress", "[out]", "unrouted:", "router.unrouted writes to source"),
    ('[ingress, "ingress:*"]', "unrouted: ingress:unrouted", "[out]", "unrouted:", "source glob"),
    ('["ingress:*"]', "unrouted: drop", "[ingress:copies]", "to:", "route 'r' writes to"),
    ('["ingress:*"]', "dead_letter: ingress:dlq", "[out]", '"ingress:*"', "dead-letter stream"),
    ('["synapse:*"]', "unrouted: drop", "[out]", '"synapse:*"', "dead-letter stream"),
    ("[ingress]", "unrouted: drop", "[ingress]", "to:", "writes to source 'ingress'"),
]


def _table(sources: str, router: str, to: str) -> str:
    return (
        f"version: 1\nrouter:\n  {router}\nsources: {sources}\n"
        f"routes:\n  - name: r\n    match: x\n    to: {to}\n"
    )


@pytest.mark.parametrize(("sources", "router", "to", "needle", "message"), LOOPS)
def test_every_written_stream_a_source_reads_is_refused_at_load(
    tmp_path: Path, sources: str, router: str, to: str, needle: str, message: str
) -> None:
    """Routes' to, router.unrouted, the dead letter read by a source name or glob: file:line."""
    text = _table(sources, router, to)
    path = write_table(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_table(path)
    [problem] = caught.value.problems
    want = next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)
    assert (problem.file, problem.line) == (str(path), want)
    assert message in problem.message


def test_check_exits_1_on_an_unrouted_loop(tmp_path: Path) -> None:
    """`synapse check` on `unrouted: ingress` with `sources: [ingress]` exits 1 naming the line."""
    path = write_table(tmp_path, _table("[ingress]", "unrouted: ingress", "[out]"))
    done = subprocess.run(
        [str(ROOT / ".venv/bin/synapse"), "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"{path}:3: router.unrouted writes to source 'ingress'" in done.stderr


def test_unrouted_to_a_stream_no_source_reads_loads(tmp_path: Path) -> None:
    """An unrouted stream outside every source glob is fine."""
    path = write_table(tmp_path, _table('["ingress:*"]', "unrouted: unrouted-events", "[out]"))
    assert load_table(path).settings.unrouted == "unrouted-events"


async def test_rescan_never_makes_a_written_stream_a_source(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """A globbed stream the router writes is skipped at rescan, warned once and counted."""
    table = table_from(
        """
        version: 1
        router: {block_ms: 100, rescan_interval_ms: 100, unrouted: drop}
        sources: ["in:*"]
        routes:
          - {name: r, match: x, to: [out]}
        """
    )
    # A table built past the load check (as an older release could): the rescan still holds.
    looping = _with_unrouted(table, "in:copies")
    metrics = Metrics()
    r.xadd("in:copies", {"type": "x", "data": "{}"})
    r.xadd("in:a", {"type": "x", "data": "{}"})
    async with running(looping, url, metrics=metrics) as router:
        await wait_for(lambda: "in:a" in router.sources, what="in:a discovered")
        await router.discover(create=False)
        await router.discover(create=False)
        assert "in:copies" not in router.sources
    skipped = metrics.registry.get_sample_value(
        "synapse_sources_skipped_total", {"reason": "write_target"}
    )
    assert skipped == 1  # once per name, however many rescans
    assert not [g for g in r.xinfo_groups("in:copies")]  # no group: never read


def _with_unrouted(table: RoutingTable, stream: str) -> RoutingTable:
    settings = dataclasses.replace(table.settings, unrouted=stream)
    return dataclasses.replace(table, settings=settings)


async def test_stream_name_not_utf8_is_skipped_and_routing_goes_on(
    table_from: Callable[..., RoutingTable], url: str, r: redis.Redis
) -> None:
    """`XADD "ingress:\\xff\\xfe"` under a glob: skipped, warned, counted; others route."""
    table = table_from(
        """
        version: 1
        router: {block_ms: 100, rescan_interval_ms: 100}
        sources: [ingress, "ingress:*"]
        routes:
          - {name: r, match: x, to: [out]}
        """
    )
    r.xadd(b"ingress:\xff\xfe", {"type": "x", "data": "{}"})
    metrics = Metrics()
    async with running(table, url, metrics=metrics) as router:
        r.xadd("ingress", {"type": "x", "data": json.dumps({"n": 1})})
        r.xadd("ingress:ok", {"type": "x", "data": json.dumps({"n": 2})})
        await wait_for(lambda: r.exists("out") and r.xlen("out") == 2, what="both routed")
        r.xadd(b"ingress:\xc3", {"type": "x", "data": "{}"})  # one more, found at a rescan
        await wait_for(
            lambda: (
                metrics.registry.get_sample_value(
                    "synapse_sources_skipped_total", {"reason": "invalid_name"}
                )
                == 2
            ),
            what="second bad name skipped",
        )
        r.xadd("ingress", {"type": "x", "data": json.dumps({"n": 3})})
        await wait_for(lambda: r.xlen("out") == 3, what="routing goes on after the rescan")
        assert router.ready
    assert not r.xinfo_groups(b"ingress:\xff\xfe")
