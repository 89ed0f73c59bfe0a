"""publish, streams, tail, dlq, replay, services, topology on the real test server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import redis
import redis.asyncio as aioredis

from synapse import keys, registry
from tests.cli.conftest import Invoke, as_json
from tests.support.deadletters import dead_letter_entry

GOOD = json.dumps({"model_id": "m1", "version": "1.0"})


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
    assert "no Redis URL: pass --redis-url or set SYNAPSE_REDIS_URL" in result.stderr
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
    assert warning.startswith("synapse: warning: a password in --redis-url is visible")
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


def test_publish_from_file_and_usage_errors(cli: Invoke, r: redis.Redis, tmp_path: Path) -> None:
    """--file reads the body; no body, or two bodies, is a usage error (exit 2)."""
    body = tmp_path / "e.json"
    body.write_text(GOOD)
    assert cli("publish", "s", "--type", "model.ready", "--file", str(body)).exit_code == 0
    assert r.xlen("s") == 1
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
    [(_, fields)] = r.xrange("ingress")
    assert fields == {
        b"type": b"model.ready",
        b"data": b'{"model_id": 1}',
        b"n": b"1",
        b"synapse-redrives": b"1",
    }
    assert r.xlen("synapse:dlq") == 0


def test_redrive_refuses_truncated_and_looping(cli: Invoke, r: redis.Redis) -> None:
    """Truncated entries are refused; entries at the redrive limit need --force; exit 1."""
    dead_letter(r, 1, blob=b"x" * 5000)
    dead_letter(r, 2, **{"synapse-redrives": b"3"})
    result = cli("dlq", "redrive", "--to", "elsewhere")
    assert result.exit_code == 1
    assert "truncated (blob:5000)" in result.stderr
    assert "already redriven 3 times (limit 3; --force)" in result.stderr
    assert not r.exists("elsewhere")
    forced = cli(
        "dlq", "redrive", "--to", "elsewhere", "--force", "--reason", "schema_violation", "--json"
    )
    assert as_json(forced)["redriven"] == 1
    [(_, fields)] = r.xrange("elsewhere")
    assert fields[b"n"] == b"2" and fields[b"synapse-redrives"] == b"4"
    assert r.xlen("synapse:dlq") == 1  # the truncated one stays


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


def test_topology_formats(cli: Invoke, r: redis.Redis) -> None:
    """topology: sources -> routes -> destinations -> groups with pending/lag, in four formats."""
    r.xadd("ingress", {"type": "model.ready", "data": GOOD})
    r.xgroup_create("ingress", "synapse-router", id="0")
    r.xadd("model-events", {"a": "1"})
    r.xgroup_create("model-events", "analytics", id="0")
    data = as_json(cli("topology", "--format", "json"))
    nodes = {n["id"]: n for n in data["nodes"]}
    assert nodes["stream:ingress"]["role"] == "source"
    assert nodes["group:model-events/analytics"]["consumers"] == 0
    edges = {(e["from"], e["to"]): e for e in data["edges"]}
    assert edges[("stream:ingress", "route:models")]["lag"] == 1
    assert edges[("route:models", "stream:model-events")]
    assert edges[("stream:model-events", "group:model-events/analytics")]["lag"] == 1
    mermaid = cli("topology", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR") and '-->|"pending 0, lag 1"|' in mermaid
    dot = cli("topology", "--format", "dot").stdout
    assert dot.startswith("digraph synapse {") and '"route:models" -> "stream:model-events";' in dot
    text = cli("topology").stdout
    assert "-> models [model.*]  (pending 0, lag 1)" in text
    assert "-> group model-events/analytics (0 consumers)  (pending 0, lag 1)" in text
