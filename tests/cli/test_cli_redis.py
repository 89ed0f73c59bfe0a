"""publish, streams, tail, dlq, replay, services, topology on the real test server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
import redis.asyncio as aioredis

from synapse import keys, registry
from synapse.cli import common, redrivereport
from synapse.cli import progress as progress_module
from synapse.cli import replay as replay_module
from synapse.events import dead_letter_fields
from tests.cli.conftest import Invoke, as_json
from tests.support.deadletters import dead_letter_entry

GOOD = json.dumps(
    {
        "model_id": "m1",
        "version": "1.0",
        "artifact_uri": "file:///tmp/m1.onnx",
        "framework": "onnx",
        "stage": "staging",
    }
)


def dead_letter(
    r: redis.Redis,
    n: int,
    *,
    reason: str = "schema_violation",
    source: str = "ingress",
    **extra: bytes,
) -> bytes:
    """Write one dead letter as the router would, with an original field n=<n>."""
    original = [b"type", b"model.ready", b"data", b'{"model_id": 1}', b"n", str(n).encode()]
    for name, value in extra.items():
        original += [name.encode(), value]
    fields = dead_letter_entry(original, n=n, source=source, reason=reason)
    return bytes(r.xadd("synapse:dlq", dict(zip(fields[::2], fields[1::2], strict=True))))


def test_no_url_says_what_to_do(cli: Invoke, tmp_path: Path) -> None:
    """With no URL and no state file: exit 2 and one line naming the flag, env and file."""
    result = cli("streams", SYNAPSE_REDIS_URL=None, SYNAPSE_STATE_DIR=str(tmp_path / "none"))
    assert result.exit_code == 2
    assert "no Redis URL: pass --url or set SYNAPSE_URL" in result.stderr
    assert str(tmp_path / "none" / "redis.url") in result.stderr


def test_url_from_state_dir(cli: Invoke, url: str, tmp_path: Path, r: redis.Redis) -> None:
    """With no URL given, <state-dir>/redis.url (as the router writes it) is used."""
    state = tmp_path / "st"
    state.mkdir()
    (state / "redis.url").write_text(url + "\n")
    r.xadd("here", {"a": "1"})
    result = cli("streams", "--json", SYNAPSE_REDIS_URL=None, SYNAPSE_STATE_DIR=str(state))
    assert result.exit_code == 0
    assert [s["name"] for s in as_json(result)["streams"]] == ["here"]
    flag = cli("--state-dir", str(state), "streams", "--json", SYNAPSE_REDIS_URL=None)
    assert flag.exit_code == 0 and as_json(flag)["streams"][0]["length"] == 1


def test_unreachable_redis_is_one_line(cli: Invoke) -> None:
    """A refused connection: exit 1, one readable line, the password redacted, no traceback."""
    result = cli("streams", "--redis-url", "redis://:secret@127.0.0.1:1/0")
    assert result.exit_code == 1
    warning, error = result.stderr.strip().splitlines()  # the password on argv is warned about
    assert warning.startswith("synapse: warning: a password in --url (or --redis-url) is visible")
    assert error.startswith("synapse: error: cannot reach Redis at redis://:***@127.0.0.1:1")
    assert "secret" not in result.output and "Traceback" not in result.output


def test_debug_shows_the_traceback(cli: Invoke) -> None:
    """--debug lets the exception through instead of the one-line error."""
    try:
        cli("--debug", "streams", "--redis-url", "redis://127.0.0.1:1/0")
    except redis.ConnectionError:
        return
    raise AssertionError("--debug should re-raise")


def test_publish_validates_then_adds(cli: Invoke, r: redis.Redis) -> None:
    """publish refuses an invalid body with every error (exit 1); a valid one is XADDed."""
    bad = cli("publish", "ingress", "--type", "model.ready", '{"model_id": 3}')
    assert bad.exit_code == 1
    assert "is not of type 'string'" in bad.stderr and "'version' is a required" in bad.stderr
    assert not r.exists("ingress")
    ok = cli("publish", "ingress", "--type", "model.ready", GOOD, "--field", "trace=t1", "--json")
    assert ok.exit_code == 0
    entry_id = as_json(ok)["id"]
    [(eid, fields)] = r.xrange("ingress")
    assert eid.decode() == entry_id
    assert fields == {b"type": b"model.ready", b"data": GOOD.encode(), b"trace": b"t1"}
    forced = cli("publish", "ingress", "--type", "model.ready", "--no-validate", "-", input="{}")
    assert forced.exit_code == 0 and r.xlen("ingress") == 2


def test_publish_says_where_the_event_goes(cli: Invoke, r: redis.Redis) -> None:
    """On a source, publish names the destinations the router would write (stderr, --json)."""
    body = json.dumps({"model_id": "m1", "version": "1.0", "stage": "production",
                       "artifact_uri": "file:///m/m1.onnx", "framework": "onnx",
                       "metrics": {"accuracy": 0.95}})  # fmt: skip
    ok = cli("publish", "ingress", "--type", "model.ready", body)
    assert ok.exit_code == 0
    assert "routes to model-events (via models), platform-events (via production-models)" in (
        ok.stderr
    )
    as_js = cli("publish", "ingress:eu", "--type", "model.updated", GOOD, "--json")
    assert as_json(as_js)["destinations"] == ["model-events"]


def test_publish_refuses_an_event_no_route_takes(cli: Invoke, r: redis.Redis) -> None:
    """A type no route takes is refused (exit 1, says it would be dead-lettered); --force writes."""
    refused = cli("publish", "ingress", "--type", "nobody.cares", "{}")
    assert refused.exit_code == 1
    assert "no route takes type 'nobody.cares' from ingress" in refused.stderr
    assert "no_route" in refused.stderr and not r.exists("ingress")
    forced = cli("publish", "ingress", "--type", "nobody.cares", "{}", "--force")
    assert forced.exit_code == 0 and r.xlen("ingress") == 1
    assert "note: no route takes type" in forced.stderr


def test_publish_refuses_destinations_and_the_dead_letter_stream(
    cli: Invoke, r: redis.Redis
) -> None:
    """Writes that bypass the router (a destination, synapse:dlq) are refused unless --force."""
    to_dest = cli("publish", "model-events", "--type", "model.ready", GOOD)
    assert to_dest.exit_code == 1
    assert "model-events is a destination (route models)" in to_dest.stderr
    assert "--force" in to_dest.stderr and not r.exists("model-events")
    to_dlq = cli("publish", "synapse:dlq", "--type", "model.ready", GOOD, "--json")
    assert to_dlq.exit_code == 1 and not r.exists("synapse:dlq")
    assert "dead-letter stream" in as_json(to_dlq)["errors"][0]
    forced = cli("publish", "model-events", "--type", "model.ready", GOOD, "--force")
    assert forced.exit_code == 0 and r.xlen("model-events") == 1
    assert "bypassing the router" in forced.stderr


def test_publish_from_file_and_usage_errors(cli: Invoke, r: redis.Redis, tmp_path: Path) -> None:
    """--file reads the body; no body, or two bodies, is a usage error (exit 2)."""
    body = tmp_path / "e.json"
    body.write_text(GOOD)
    done = cli("publish", "s", "--type", "model.ready", "--file", str(body))
    assert done.exit_code == 0 and r.xlen("s") == 1
    assert "note: s is not a source" in done.stderr
    assert cli("publish", "s", "--type", "model.ready").exit_code == 2
    assert cli("publish", "s", "--file", str(body), "x").exit_code == 2


def test_streams_and_info(cli: Invoke, r: redis.Redis) -> None:
    """streams lists length/groups/pending/lag; info shows groups with consumers."""
    ids = [r.xadd("ingress", {"type": "model.ready", "data": GOOD}) for _ in range(3)]
    r.xgroup_create("ingress", "g1", id="0")
    r.xreadgroup("g1", "c1", {"ingress": ">"}, count=2)
    data = as_json(cli("streams", "--json"))
    [row] = data["streams"]
    assert row["name"] == "ingress" and row["length"] == 3
    assert row["first_id"] == ids[0].decode() and row["last_id"] == ids[2].decode()
    assert row["first_time"].endswith("Z")
    [group] = row["groups"]
    assert group["name"] == "g1" and group["pending"] == 2 and group["lag"] == 1
    assert group["consumers"] == [
        {"name": "c1", "pending": 2, "idle_ms": group["consumers"][0]["idle_ms"]}
    ]
    text = cli("streams", "info", "ingress")
    assert "group g1: pending 2, lag 1" in text.stdout and "c1: pending 2" in text.stdout
    table = cli("streams")
    assert table.stdout.splitlines()[0].split() == [
        "STREAM",
        "LENGTH",
        "AGE",
        "FIRST",
        "LAST",
        "GROUPS",
        "PENDING",
        "LAG",
    ]
    missing = cli("streams", "info", "nope")
    assert missing.exit_code == 1 and "no stream 'nope'" in missing.stderr


def test_tail_pretty_prints_and_filters(cli: Invoke, r: redis.Redis) -> None:
    """tail shows the last N entries with pretty JSON bodies; --type filters by glob."""
    for i in range(5):
        r.xadd("s", {"type": "model.ready" if i % 2 else "x.error", "data": json.dumps({"i": i})})
    out = cli("tail", "s", "-n", "2").stdout
    assert '"i": 3' in out and '"i": 4' in out and '"i": 2' not in out
    rows = [
        json.loads(line)
        for line in cli("tail", "s", "--type", "model.*", "--json").stdout.splitlines()
    ]
    assert [row["body"]["i"] for row in rows] == [1, 3]
    assert all(row["type"] == "model.ready" and row["id"] and row["time"] for row in rows)


def test_dlq_show_of_a_non_id_is_a_usage_error(cli: Invoke, r: redis.Redis) -> None:
    """`dlq show garbage` (and `redrive --id garbage`) exit 2 naming the id form; no Redis error."""
    dead_letter(r, 1)
    shown = cli("dlq", "show", "garbage")
    assert shown.exit_code == 2
    assert "not an entry id: 'garbage'" in shown.stderr and "Redis said" not in shown.stderr
    redriven = cli("dlq", "redrive", "--id", "12-x")
    assert redriven.exit_code == 2 and "not an entry id: '12-x'" in redriven.stderr
    assert r.xlen("synapse:dlq") == 1


def test_counts_are_pluralized(cli: Invoke, r: redis.Redis) -> None:
    """One dead letter is "1 dead letter", two are "2 dead letters"."""
    dead_letter(r, 1)
    assert "1 dead letter in synapse:dlq" in cli("dlq", "list").stdout
    assert "1 dead letter would be deleted" in cli("dlq", "purge", "--dry-run").stdout
    dead_letter(r, 2)
    assert "2 dead letters in synapse:dlq" in cli("dlq", "list").stdout


def test_dlq_list_and_show(cli: Invoke, r: redis.Redis) -> None:
    """dlq list counts by reason and filters; show prints the original fields."""
    first = dead_letter(r, 1)
    dead_letter(r, 2, reason="no_route", source="ingress:b")
    data = as_json(cli("dlq", "list", "--json"))
    assert data["total"] == 2 and data["by_reason"] == {"schema_violation": 1, "no_route": 1}
    entry = data["entries"][0]
    for key in ("id", "time", "reason", "error", "source", "source_id", "type", "redrives"):
        assert key in entry
    only = as_json(cli("dlq", "list", "--json", "--source", "ingress:b"))
    assert [e["reason"] for e in only["entries"]] == ["no_route"]
    shown = as_json(cli("dlq", "show", first.decode(), "--json"))
    assert shown["fields"]["n"] == "1" and shown["reason"] == "schema_violation"
    assert cli("dlq", "show", "1-1").exit_code == 1


def test_redrive_moves_original_fields_and_counts(cli: Invoke, r: redis.Redis) -> None:
    """redrive re-publishes only the original fields, bumps synapse-redrives, deletes."""
    dead_letter(r, 1)
    dry = as_json(cli("dlq", "redrive", "--dry-run", "--json"))
    assert dry["would_redrive"] == 1 and r.xlen("synapse:dlq") == 1 and not r.exists("ingress")
    result = cli("dlq", "redrive", "--json")
    assert result.exit_code == 0 and as_json(result)["redriven"] == 1
    [(new_id, fields)] = r.xrange("ingress")
    assert fields == {b"type": b"model.ready", b"data": b'{"model_id": 1}', b"n": b"1"}
    assert r.xlen("synapse:dlq") == 0
    # The count is kept where no producer can write it, under the new entry's id.
    assert r.hgetall(keys.redrive_counts("synapse:dlq")) == {b"ingress\0" + new_id: b"1"}


def test_redrive_refuses_truncated_and_looping(cli: Invoke, r: redis.Redis) -> None:
    """Truncated entries are refused; entries at the redrive limit need --force; exit 1."""
    counts = keys.redrive_counts("synapse:dlq")
    dead_letter(r, 1, blob=b"x" * 5000)
    dead_letter(r, 2)  # made from entry 3-0 of ingress, itself a third redrive:
    r.hset(counts, b"ingress\0" + b"3-0", 3)
    result = cli("dlq", "redrive", "--to", "elsewhere")
    assert result.exit_code == 1
    assert "truncated (blob:5000)" in result.stderr
    assert "already redriven 3 times (limit 3; --force)" in result.stderr
    assert not r.exists("elsewhere")
    forced = cli(
        "dlq", "redrive", "--to", "elsewhere", "--force", "--reason", "schema_violation", "--json"
    )
    assert as_json(forced)["redriven"] == 1
    [(new_id, fields)] = r.xrange("elsewhere")
    assert fields[b"n"] == b"2"
    assert r.hgetall(counts) == {b"elsewhere\0" + new_id: b"4"}
    assert r.xlen("synapse:dlq") == 1  # the truncated one stays


def test_producer_set_redrives_field_neither_blocks_nor_dodges_the_limit(
    cli: Invoke, r: redis.Redis
) -> None:
    """A producer's own synapse-redrives field never reaches the dead letter or the count."""
    dead_letter(r, 1, **{"synapse-redrives": b"3"})
    [(_, letter)] = r.xrange("synapse:dlq")
    assert b"synapse-redrives" not in letter
    result = cli("dlq", "redrive", "--json")
    assert result.exit_code == 0 and as_json(result)["redriven"] == 1
    [(_, fields)] = r.xrange("ingress")
    assert b"synapse-redrives" not in fields


def test_redrive_goes_only_to_a_stream_the_table_consumes(cli: Invoke, r: redis.Redis) -> None:
    """A hand-written dead letter naming a stream the table does not consume is refused."""
    fields = {b"type": b"x", b"synapse-source": b"payments", b"synapse-id": b"1-0"}
    r.xadd("synapse:dlq", fields)
    r.xadd("synapse:dlq", {**fields, b"synapse-destination": b"payments"})
    result = cli("dlq", "redrive", "--json")
    assert result.exit_code == 1
    whys = [x["why"] for x in as_json(result)["refused"]]
    assert "is not a stream the table consumes" in whys[0]
    assert "is not a destination of the table" in whys[1]
    assert not r.exists("payments") and r.xlen("synapse:dlq") == 2
    moved = cli("dlq", "redrive", "--to", "payments", "--json")  # the operator's choice
    assert as_json(moved)["redriven"] == 2 and r.xlen("payments") == 2


def test_redrive_of_a_destination_dead_letter_writes_that_destination_only(
    cli: Invoke, r: redis.Redis
) -> None:
    """A dead letter recording synapse-destination goes there, with the router's provenance."""
    original = [b"type", b"model.ready", b"data", b"{}"]
    fields = dead_letter_fields(
        original,
        reason="destination_error",
        error="x",
        source=b"ingress",
        entry_id=b"5-0",
        deliveries=5,
        config_hash="abc",
        now_ms=1_700_000_000_000,
        destination=(b"model-events", b"models"),
    )
    r.xadd("synapse:dlq", dict(zip(fields[::2], fields[1::2], strict=True)))
    result = cli("dlq", "redrive", "--json")
    assert result.exit_code == 0 and as_json(result)["entries"][0]["to"] == "model-events"
    assert not r.exists("ingress")
    [(_, copy)] = r.xrange("model-events")
    assert copy == {
        b"type": b"model.ready",
        b"data": b"{}",
        b"synapse-source": b"ingress",
        b"synapse-id": b"5-0",
        b"synapse-route": b"models",
    }


def test_redrive_into_wrong_type_keeps_the_dead_letter(cli: Invoke, r: redis.Redis) -> None:
    """A destination that refuses the write (WRONGTYPE) keeps the dead letter; exit 1."""
    dead_letter(r, 1)
    r.set("notastream", "x")
    result = cli("dlq", "redrive", "--to", "notastream", "--json")
    assert result.exit_code == 1
    assert "WRONGTYPE" in as_json(result)["refused"][0]["why"]
    assert r.xlen("synapse:dlq") == 1


def test_purge_asks_and_respects_filters(cli: Invoke, r: redis.Redis) -> None:
    """purge asks (no answer: nothing deleted), --yes deletes; filters delete only matches."""
    dead_letter(r, 1)
    dead_letter(r, 2, reason="no_route")
    refused = cli("dlq", "purge", input="n\n")
    assert refused.exit_code == 1 and r.xlen("synapse:dlq") == 2
    some = as_json(cli("dlq", "purge", "--reason", "no_route", "--yes", "--json"))
    assert some["deleted"] == 1 and r.xlen("synapse:dlq") == 1
    confirmed = cli("dlq", "purge", input="y\n")
    assert confirmed.exit_code == 0 and r.xlen("synapse:dlq") == 0


def test_replay_copies_with_provenance_and_filters(cli: Invoke, r: redis.Redis) -> None:
    """replay copies matching entries with synapse-replay-of; a rerun copies nothing more."""
    ids = []
    for i in range(6):
        stage = "production" if i % 2 else "staging"
        body = json.dumps({"model_id": f"m{i}", "stage": stage})
        ids.append(r.xadd("src", {"type": "model.ready" if i < 4 else "x.error", "data": body}))
    args = ["replay", "src", "--to", "dst", "--type", "model.*", "--where", "{stage: production}"]
    data = as_json(cli(*args, "--json"))
    assert data["copied"] == 2 and data["skipped"] == 4
    copies = r.xrange("dst")
    assert [f[b"synapse-replay-of"] for _, f in copies] == [ids[1], ids[3]]
    assert all(f[b"synapse-replay-source"] == b"src" for _, f in copies)
    again = as_json(cli(*args, "--json"))
    assert again["copied"] == 0 and again["resumed_after"] == ids[5].decode()
    assert r.xlen("dst") == 2
    restarted = as_json(cli(*args, "--restart", "--json"))
    assert restarted["copied"] == 2 and r.xlen("dst") == 4


def test_replay_time_window_and_usage(cli: Invoke, r: redis.Redis) -> None:
    """--since/--until take ids and times; a bad time or --to SOURCE is a usage error."""
    for ms in (1000, 2000, 3000):
        r.xadd("src", {"a": str(ms)}, id=f"{ms}-0")
    data = as_json(
        cli(
            "replay",
            "src",
            "--to",
            "dst",
            "--since",
            "2000",
            "--until",
            "1970-01-01T00:00:02.5Z",
            "--json",
        )
    )
    assert data["copied"] == 1 and data["first_id"] == "2000-0"
    dry = as_json(cli("replay", "src", "--to", "dst2", "--dry-run", "--json"))
    assert dry["would_copy"] == 3 and not r.exists("dst2")
    assert cli("replay", "src", "--to", "src").exit_code == 2
    bad = cli("replay", "src", "--to", "x", "--since", "yesterday-ish")
    assert bad.exit_code == 2 and "cannot read time" in bad.stderr
    assert cli("replay", "src", "--to", "x", "--where", "[1]").exit_code == 2


async def test_registry_ttl_and_services(cli: Invoke, url: str) -> None:
    """A registered service is listed with its streams; without heartbeats it expires."""
    client = aioredis.Redis.from_url(url)
    info = registry.ServiceInfo(
        name="trainer",
        instance="t-1",
        version="2.0",
        produces=("training-events",),
        consumes=("model-events",),
    )
    try:
        async with registry.registered(client, info, ttl_s=30) as beat:
            listed = await asyncio.to_thread(cli, "services", "--json")
            [svc] = as_json(listed)["services"]
            assert svc["name"] == "trainer" and svc["consumes"] == ["model-events"]
            assert 0 < svc["ttl_ms"] <= 30_000 and beat.beats >= 1
        assert await registry.list_services(client) == []  # deregistered on exit
        await registry.register(client, info, ttl_s=0.2)
        assert len(await registry.list_services(client)) == 1
        deadline = asyncio.get_running_loop().time() + 5
        while await registry.list_services(client):
            assert asyncio.get_running_loop().time() < deadline, "never expired"
            await asyncio.sleep(0.05)
        assert await client.zcard(keys.REGISTRY_INDEX) == 0  # index pruned too
    finally:
        await client.aclose()


async def test_services_show_each_consuming_groups_pending_and_lag(
    cli: Invoke, url: str, r: redis.Redis
) -> None:
    """services --json: a consuming service's row carries its group's pending and lag on
    each stream it reads (one entry delivered and unacknowledged, one not yet read)."""
    r.xadd("model-events", {"n": "1"})
    r.xadd("model-events", {"n": "2"})
    r.xgroup_create("model-events", "trainer", id="0")
    r.xreadgroup("trainer", "t-1", {"model-events": ">"}, count=1)
    client = aioredis.Redis.from_url(url)
    info = registry.ServiceInfo(
        name="trainer", instance="t-1", consumes=("model-events", "not-yet"), group="trainer"
    )
    try:
        async with registry.registered(client, info, ttl_s=30):
            listed = await asyncio.to_thread(cli, "services", "--json")
            [svc] = as_json(listed)["services"]
            assert svc["streams"] == {"model-events": {"pending": 1, "lag": 1}}
    finally:
        await client.aclose()


def test_topology_formats(cli: Invoke, r: redis.Redis) -> None:
    """topology: sources -> router -> routes -> destinations -> groups with lag, four formats."""
    r.xadd("ingress", {"type": "model.ready", "data": GOOD})
    r.xgroup_create("ingress", "synapse-router", id="0")
    r.xadd("model-events", {"a": "1"})
    r.xgroup_create("model-events", "analytics", id="0")
    data = as_json(cli("topology", "--format", "json"))
    nodes = {n["id"]: n for n in data["nodes"]}
    assert nodes["stream:ingress"]["role"] == "source"
    assert nodes["group:analytics"]["consumers"] == 0
    edges = {(e["from"], e["to"]): e for e in data["edges"]}
    assert edges[("stream:ingress", "router:synapse-router")]["lag"] == 1
    assert edges[("router:synapse-router", "route:models")]
    assert edges[("route:models", "stream:model-events")]
    assert edges[("stream:model-events", "group:analytics")]["lag"] == 1
    mermaid = cli("topology", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR") and '-->|"pending 0, lag 1"|' in mermaid
    dot = cli("topology", "--format", "dot").stdout
    assert dot.startswith("digraph synapse {") and '"route:models" -> "stream:model-events";' in dot
    text = cli("topology").stdout
    assert "ingress  1        0        1" in text
    assert "model-events  1        analytics  group, 0 consumers  0        1" in text


class ShownProgress(progress_module.Progress):
    """The real progress bar, shown as on a terminal; every instance kept for the test."""

    made: ClassVar[list[progress_module.Progress]] = []

    def __init__(self, label: str, as_json: bool, total: int | None = None) -> None:
        super().__init__(label, as_json, total)
        self.shown = True
        ShownProgress.made.append(self)


def test_replay_progress_total_is_what_is_left_to_copy(
    cli: Invoke, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bar's total is the entries still to scan (a range, a resumed run): it ends at 100%."""
    monkeypatch.setattr(replay_module, "Progress", ShownProgress)
    ids = [r.xadd("ingress", {"type": "model.ready", "data": GOOD}) for _ in range(2500)]
    assert common.count_range(r, "ingress", ids[1000].decode(), ids[1999].decode()) == 1000
    ShownProgress.made.clear()
    ranged = cli("replay", "ingress", "--to", "copy", "--since", ids[500].decode(),
                 "--until", ids[1499].decode())  # fmt: skip
    assert ranged.exit_code == 0, ranged.output
    [bar] = ShownProgress.made
    assert bar.total == bar.done == 1000
    ShownProgress.made.clear()
    r.xadd("ingress", {"type": "model.ready", "data": GOOD})
    resumed = cli("replay", "ingress", "--to", "copy", "--since", ids[500].decode())
    assert "resumed after" in resumed.stdout
    [bar] = ShownProgress.made
    assert bar.total == bar.done == 2500 - 1500 + 1


def test_streams_show_the_oldest_entry_age(cli: Invoke, r: redis.Redis) -> None:
    """streams (and streams info) show how old each stream's oldest entry is."""
    two_days_ago = int(time.time() * 1000) - 2 * 86_400_000 - 3_600_000
    r.xadd("audit", {"a": "1"}, id=f"{two_days_ago}-0")
    r.xadd("audit", {"a": "2"})
    [row] = as_json(cli("streams", "--json"))["streams"]
    assert 2 * 86_400 + 3_600 <= row["oldest_age_s"] < 2 * 86_400 + 3_700
    text = cli("streams").stdout.splitlines()
    assert text[0].split()[2] == "AGE" and text[1].split()[2] == "2d1h"
    assert "(oldest age 2d1h)" in cli("streams", "info", "audit").stdout


def logged(stderr: str, event: str) -> dict[str, Any]:
    """The one JSON log line named ``event`` on stderr."""
    [line] = [
        json.loads(raw)
        for raw in stderr.splitlines()
        if raw.startswith("{") and json.loads(raw).get("event") == event
    ]
    return dict(line)


def test_replay_and_purge_log_what_they_did(cli: Invoke, r: redis.Redis) -> None:
    """replay and dlq purge each log one structured line (replay_done, dlq_purged)."""
    for _ in range(3):
        r.xadd("ingress", {"type": "model.ready", "data": GOOD})
    replayed = cli("replay", "ingress", "--to", "copy")
    line = logged(replayed.stderr, "replay_done")
    assert line["copied"] == 3 and line["to"] == "copy" and line["level"] == "info"
    assert line["interrupted"] is False and line["timestamp"]
    dead_letter(r, 1)
    dead_letter(r, 2, reason="no_route")
    purged = cli("dlq", "purge", "--reason", "no_route", "--yes")
    line = logged(purged.stderr, "dlq_purged")
    assert line["deleted"] == 1 and line["reasons"] == ["no_route"]


def test_replay_replaces_synapse_fields_producers_could_set(cli: Invoke, r: redis.Redis) -> None:
    """Replaying a stream producers write drops their synapse-* fields; replaying one the
    router writes keeps only the router's provenance; each copy gets its replay fields."""
    forged = {b"synapse-source": b"forged", b"synapse-redrives": b"9", b"synapse-replay-of": b"1"}
    r.xadd("ingress", {b"type": b"model.ready", b"data": b"{}", **forged})
    routed = {b"synapse-source": b"ingress", b"synapse-id": b"1-0", b"synapse-route": b"models"}
    r.xadd("model-events", {b"type": b"model.ready", **routed, b"synapse-reason": b"x"})
    assert cli("replay", "ingress", "--to", "debug-a").exit_code == 0
    assert cli("replay", "model-events", "--to", "debug-b").exit_code == 0
    [(_, from_ingress)] = r.xrange("debug-a")
    assert {k for k in from_ingress if k.startswith(b"synapse-")} == {
        b"synapse-replay-of",
        b"synapse-replay-source",
    }
    assert from_ingress[b"synapse-replay-source"] == b"ingress"
    [(_, from_routed)] = r.xrange("debug-b")
    assert {k: from_routed[k] for k in routed} == routed
    assert b"synapse-reason" not in from_routed


def test_unknown_reason_is_a_usage_error_listing_the_valid_ones(
    cli: Invoke, r: redis.Redis
) -> None:
    """`--reason nope` exits 2 naming the valid reasons (redrive, list, purge alike); nothing
    is touched."""
    dead_letter(r, 1)
    for command in (("dlq", "redrive"), ("dlq", "list"), ("dlq", "purge", "--yes")):
        result = cli(*command, "--reason", "nope")
        assert result.exit_code == 2, (command, result.output)
        assert "'nope' is not one of" in result.stderr
        assert "'schema_violation'" in result.stderr and "'destination_error'" in result.stderr
    assert r.xlen("synapse:dlq") == 1


def test_redrive_says_how_many_would_fail_the_same_way_again(cli: Invoke, r: redis.Redis) -> None:
    """Before redriving, the router's dry run on each dead letter under the current table:
    those that would come straight back with the same reason are counted (stderr, --json)."""
    dead_letter(r, 1)  # {"model_id": 1}: still violates the model schema
    dead_letter(r, 2)
    fixed = [b"type", b"model.ready", b"data", GOOD.encode()]  # passes the schema now
    fields = dead_letter_entry(fixed, n=3)
    r.xadd("synapse:dlq", dict(zip(fields[::2], fields[1::2], strict=True)))
    gone = [b"type", b"nobody.cares", b"data", b"{}"]
    fields = dead_letter_entry(gone, n=4, reason="no_route")
    r.xadd("synapse:dlq", dict(zip(fields[::2], fields[1::2], strict=True)))
    dry = cli("dlq", "redrive", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert (
        "note: 3 of 4 dead letters would be dead-lettered again the same way under the current "
        "table (schema_violation 2, no_route 1)"
    ) in dry.stderr
    again = as_json(cli("dlq", "redrive", "--reason", "schema_violation", "--json"))
    assert again["would_fail_again"] == {
        "checked": 3, "same_reason": 2, "by_reason": {"schema_violation": 2}, "other_reason": {},
    }  # fmt: skip
    assert again["redriven"] == 3


def test_redrive_progress_total_is_the_selection(
    cli: Invoke, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The redrive bar's total is the dead letters selected (not the stream's length)."""
    monkeypatch.setattr(redrivereport, "Progress", ShownProgress)
    for n in range(6):
        dead_letter(r, n, reason="no_route" if n % 3 else "schema_violation")
    ShownProgress.made.clear()
    done = cli("dlq", "redrive", "--reason", "schema_violation", "--dry-run")
    assert done.exit_code == 0, done.output
    [bar] = ShownProgress.made
    assert bar.total == bar.done == 2
