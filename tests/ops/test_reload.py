"""SIGHUP with the real daemon: good reloads swap the table, bad ones change nothing."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from synapse.config import load_table
from tests.conftest import wait_sync, write_table
from tests.support.router import RouterProcess, key

FAST = "router: {block_ms: 100, claim_idle_ms: 1000, rescan_interval_ms: 200}"
TABLE_A = f"""
    version: 1
    {FAST}
    sources: [ingress]
    schemas:
      "ev.*": ev.json
    routes:
      - name: ra
        match: "ev.*"
        to: [x, y]
"""
TABLE_B = f"""
    version: 1
    {FAST}
    sources: [ingress]
    schemas:
      "ev.*": ev.json
    routes:
      - name: rb
        match: "ev.*"
        to: [y, z]
"""
EV_SCHEMA = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` in one rename, as an editor or config manager should."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text)


def ids_in(r: redis.Redis, stream: str) -> list[bytes]:
    return [f[b"synapse-id"] for _, f in r.xrange(stream)] if r.exists(stream) else []


def send(r: redis.Redis, n: int, source: str = "ingress") -> list[bytes]:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(source, {"type": "ev.tick", "data": json.dumps({"n": i})})
    return list(pipe.execute())


def send_until_in(r: redis.Redis, dest: str, timeout_s: float = 10.0) -> bytes:
    """Send an event every 20 ms until one reaches ``dest``; that event's id.

    A reload takes effect between batches: the read in flight (up to block_ms) still
    ends on the table it started with, so the first event after the log may not.
    """
    deadline = time.monotonic() + timeout_s
    sent: list[bytes] = []
    while time.monotonic() < deadline:
        sent += send(r, 1)
        found = set(ids_in(r, dest)) & set(sent)
        if found:
            return found.pop()
        time.sleep(0.02)
    raise AssertionError(f"no event reached {dest} within {timeout_s}s")


def all_acked(r: redis.Redis, source: str = "ingress", group: bytes = b"synapse-router") -> bool:
    info = {g["name"]: g for g in r.xinfo_groups(source)}.get(group)
    return info is not None and info["pending"] == 0 and info["lag"] == 0


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_table(tmp_path / "cfg", TABLE_A, {"ev.json": EV_SCHEMA})


def test_sighup_applies_new_table_and_logs_diff(
    config: Path, spawn: Callable[..., RouterProcess], r: redis.Redis
) -> None:
    """A valid reload changes routing, starts/stops sources, logs the diff, updates metrics."""
    router = spawn(config)
    router.wait_ready()
    first_hash = load_table(config).hash
    [eid] = send(r, 1)
    wait_sync(lambda: eid in ids_in(r, "x"), what="routed by table A")
    loaded_at = router.metric("synapse_config_last_reload_success_timestamp_seconds")
    new = TABLE_B.replace("sources: [ingress]", "sources: [ingress2]").replace(
        "name: rb", "name: rb\n        where: {n: {gte: 0}}"
    )
    write_atomic(config, dedent(new))
    router.signal(signal.SIGHUP)
    done = router.wait_log("config_reloaded")
    assert done["routes_added"] == ["rb"]
    assert done["routes_removed"] == ["ra"]
    assert done["sources_added"] == ["ingress2"]
    assert done["sources_removed"] == ["ingress"]
    new_hash = load_table(config).hash
    assert done["config_hash"] == new_hash != first_hash
    # The swap lands between batches, once the read in flight (block_ms) returns.
    router.wait_log("sources_removed", where=lambda line: line["sources"] == ["ingress"])
    [old_src] = send(r, 1, "ingress")  # no longer a source: stays unread
    [new_src] = send(r, 1, "ingress2")
    wait_sync(lambda: new_src in ids_in(r, "z"), what="routed by table B from the new source")
    assert new_src in ids_in(r, "y") and new_src not in ids_in(r, "x")
    group = {g["name"]: g for g in r.xinfo_groups("ingress")}[b"synapse-router"]
    assert group["last-delivered-id"] == eid != old_src  # the old source is no longer read
    samples = router.wait_scrape(
        {
            key("synapse_config_reloads_total", result="success"): 1,
            key("synapse_config_reloads_total", result="failure"): 0,
            key("synapse_config_info", hash=new_hash): 1,
            key("synapse_config_info", hash=first_hash): None,
            key("synapse_config_last_reload_successful"): 1,
        }
    )
    assert samples[key("synapse_config_last_reload_success_timestamp_seconds")] > (loaded_at or 0)
    assert router.stop() == 0


BAD = {
    # broken YAML on line 5 of routes.yaml
    "broken_yaml": (
        TABLE_B.replace("sources: [ingress]", "sources: [ingress"),
        None,
        r"routes.yaml:\d+: invalid YAML",
    ),
    "missing_schema": (
        TABLE_B.replace("ev.json", "nowhere.json"),
        None,
        r"routes.yaml:\d+: schema file 'nowhere.json' not found",
    ),
    "invalid_schema": (TABLE_B, {"type": 12}, r"schemas/ev.json.*invalid schema"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_reload_changes_nothing(
    case: str, config: Path, spawn: Callable[..., RouterProcess], r: redis.Redis
) -> None:
    """A bad new table is refused with file:line, counted, and the old table keeps routing."""
    import re

    text, schema, pattern = BAD[case]
    router = spawn(config)
    router.wait_ready()
    old_hash = load_table(config).hash
    write_atomic(config, dedent(text))
    if schema is not None:
        write_atomic(config.parent / "schemas" / "ev.json", json.dumps(schema))
    router.signal(signal.SIGHUP)
    failed = router.wait_log("config_reload_failed")
    assert failed["level"] == "error"
    assert any(re.search(pattern, e) for e in failed["errors"]), failed["errors"]
    assert failed["config_hash"] == old_hash
    [eid] = send(r, 1)
    wait_sync(lambda: eid in ids_in(r, "x"), what="still routed by the old table")
    wait_sync(lambda: all_acked(r), what="acked")
    assert ids_in(r, "z") == []
    router.wait_scrape(
        {
            key("synapse_config_reloads_total", result="failure"): 1,
            key("synapse_config_reloads_total", result="success"): 0,
            key("synapse_config_info", hash=old_hash): 1,
            key("synapse_config_last_reload_successful"): 0,
        }
    )
    # Fixed on disk, the next SIGHUP succeeds: one failure does not wedge reloads.
    write_atomic(config, dedent(TABLE_B))
    write_atomic(config.parent / "schemas" / "ev.json", json.dumps(EV_SCHEMA))
    router.signal(signal.SIGHUP)
    router.wait_log("config_reloaded")
    send_until_in(r, "z")  # routed by the fixed table
    router.wait_scrape({key("synapse_config_last_reload_successful"): 1})
    assert router.stop() == 0


@pytest.mark.slow
def test_sighup_storm_routes_each_event_by_one_table(
    config: Path, spawn: Callable[..., RouterProcess], r: redis.Redis
) -> None:
    """50 SIGHUPs alternating two tables while events flow: each event follows exactly one."""
    router = spawn(config)
    router.wait_ready()
    tables = [dedent(TABLE_A), dedent(TABLE_B)]
    sent: list[bytes] = []
    for i in range(50):
        write_atomic(config, tables[i % 2])
        router.signal(signal.SIGHUP)
        sent += send(r, 20)
    final_hash = load_table(config).hash  # table B, written last
    router.wait_scrape({key("synapse_config_info", hash=final_hash): 1}, timeout_s=20)
    wait_sync(lambda: all_acked(r), timeout_s=30, what="every event acked")
    assert router.process.poll() is None
    copies: dict[str, list[tuple[bytes, bytes]]] = {
        d: [(f[b"synapse-id"], f[b"synapse-route"]) for _, f in r.xrange(d)] for d in "xyz"
    }
    for dest, rows in copies.items():
        assert len(rows) == len({eid for eid, _ in rows}), f"duplicate copies in {dest}"
    by_id: dict[bytes, set[tuple[str, bytes]]] = {}
    for dest, rows in copies.items():
        for eid, route in rows:
            by_id.setdefault(eid, set()).add((dest, route))
    assert sorted(by_id) == sorted(sent), "every event routed, none lost"
    legal = ({("x", b"ra"), ("y", b"ra")}, {("y", b"rb"), ("z", b"rb")})
    both = {"ra": 0, "rb": 0}
    for eid, placed in by_id.items():
        assert placed in legal, (eid, placed)
        both["ra" if ("x", b"ra") in placed else "rb"] += 1
    assert both["ra"] and both["rb"], both  # the storm really switched tables mid-flow
    ok = len(router.events("config_reloaded"))
    assert 1 <= ok <= 50
    router.wait_scrape(
        {
            key("synapse_config_reloads_total", result="success"): ok,
            key("synapse_config_reloads_total", result="failure"): 0,
        }
    )
    send_until_in(r, "z")  # the last table routes
    assert router.stop() == 0


def _catches_hup(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGHUP - 1)))


def test_sighup_during_startup_does_not_kill(
    config: Path, spawn: Callable[..., RouterProcess], r: redis.Redis
) -> None:
    """SIGHUPs from the first moment Python runs until ready never kill; they become a reload."""
    router = spawn(config)
    wait_sync(lambda: _catches_hup(router.pid), timeout_s=5, what="early SIGHUP handler")
    hups = 0
    while not router.events("router_starting") and router.process.poll() is None:
        router.signal(signal.SIGHUP)  # during imports, table load and start-up
        hups += 1
        time.sleep(0.002)  # pacing, not waiting for anything
    router.signal(signal.SIGHUP)
    assert hups > 0
    router.wait_ready()
    assert router.process.poll() is None
    router.wait_log("config_reloaded")
    [eid] = send(r, 1)
    wait_sync(lambda: eid in ids_in(r, "x"), what="routing after the early SIGHUPs")
    assert router.stop() == 0
