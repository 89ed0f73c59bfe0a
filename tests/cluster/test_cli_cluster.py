"""The registry and the ``synapse`` CLI against a real 3-primary cluster (redis+cluster://)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis
from click.testing import CliRunner, Result
from redis.cluster import RedisCluster

from synapse import keys, registry, wire
from synapse.cli.main import main
from synapse.cli.replay import checkpoint_key, hashed_part, legacy_key
from synapse.embedded import free_port
from tests.cluster.conftest import slot
from tests.cluster.localcluster import LocalCluster
from tests.conftest import wait_for, wait_sync, write_table
from tests.support.deadletters import dead_letter_entry
from tests.support.router import RouterProcess


def test_registry_keys_share_one_slot() -> None:
    """Every registry key carries the {registry} hash tag, so its MULTI stays in one slot."""
    info = registry.ServiceInfo(name="svc", instance="host:1")
    assert slot(info.key) == slot(keys.REGISTRY_INDEX) == slot("{registry}")


async def test_registry_transactions_work_on_a_cluster_client(curl: str, rc: RedisCluster) -> None:
    """register / list / deregister run on a connect_any cluster client, atomically."""
    client = wire.connect_any(curl, read_timeout_s=5)
    info = registry.ServiceInfo(name="trainer", instance="t-1", consumes=("model-events",))
    try:
        await registry.register(client, info, ttl_s=30)
        [found] = await registry.list_services(client)
        assert found.info.name == "trainer" and found.info.consumes == ("model-events",)
        assert 0 < rc.pttl(info.key) <= 30_000
        await registry.deregister(client, info)
        assert await registry.list_services(client) == []
        assert rc.zcard(keys.REGISTRY_INDEX) == 0
    finally:
        await client.aclose()


# -- the CLI on a cluster ---------------------------------------------------------------------

TABLE = """
    version: 1
    router: {block_ms: 100, rescan_interval_ms: 200, dead_letter: "{orders}:dlq"}
    sources: ["{orders}:in", ingress]
    routes:
      - name: orders
        match: "order.*"
        to: ["{orders}:billing"]
      - name: models
        match: "model.*"
        to: [model-events]
"""


def synapse(url: str, *args: str, config: Path | None = None) -> Result:
    """``synapse ARGS`` in-process against ``url``."""
    env = {"SYNAPSE_REDIS_URL": url, "SYNAPSE_REDIS_PASSWORD": None, "SYNAPSE_DEBUG": None}
    env["SYNAPSE_CONFIG"] = str(config) if config else "/nonexistent/routes.yaml"
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_per_primary(local_cluster: LocalCluster) -> list[str]:
    """Stream names served by each primary in turn (one name per node)."""
    names: dict[int, str] = {}
    for i in range(200):
        names.setdefault(local_cluster.node_for(f"s{i}").port, f"s{i}")
        if len(names) == len(local_cluster.primary_nodes()):
            return sorted(names.values())
    raise AssertionError("no key found for some primary")


def test_streams_publish_and_tail_on_a_cluster(curl: str, local_cluster: LocalCluster) -> None:
    """publish, streams (SCAN on every primary), streams info and tail work on a cluster URL."""
    names = one_per_primary(local_cluster)
    for name in names:
        for n in range(3):
            published = synapse(
                curl, "publish", name, f'{{"n": {n}}}', "--type", "t", "--no-validate", "--json"
            )
            assert as_json(published)["published"] is True
    listed = as_json(synapse(curl, "streams", "--json"))["streams"]
    assert [s["name"] for s in listed] == names  # one stream on each primary: all found
    assert all(s["length"] == 3 for s in listed)
    assert [
        s["name"]
        for s in as_json(synapse(curl, "streams", "--match", names[1], "--json"))["streams"]
    ] == [names[1]]
    info = as_json(synapse(curl, "streams", "info", names[2], "--json"))
    assert info["length"] == 3 and info["groups"] == []
    tail = synapse(curl, "tail", names[0], "-n", "2", "--json")
    shown = [json.loads(line) for line in as_json_lines(tail)]
    assert [e["body"] for e in shown] == [{"n": 1}, {"n": 2}]
    assert shown[0]["fields"] == {"type": "t", "data": '{"n": 1}'}  # flat fields, in order
    missing = synapse(curl, "streams", "info", "nope")
    assert missing.exit_code == 1 and "no stream 'nope'" in missing.stderr


def as_json_lines(result: Result) -> list[str]:
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


DLQ = "{orders}:dlq"


def dead_letter(rc: RedisCluster, source: str, n: int) -> str:
    """A dead letter of ``source`` in {orders}:dlq, as the router writes it."""
    fields = dead_letter_entry([b"type", b"order.new", b"n", str(n).encode()], n=n, source=source)
    return bytes(rc.execute_command("XADD", DLQ, "*", *fields)).decode()


def test_dlq_on_a_cluster_redrives_in_slot_atomically_and_across_slots_safely(
    curl: str, rc: RedisCluster, tmp_path: Path
) -> None:
    """dlq list/show/purge work; redrive is atomic in the DLQ's slot, write-then-delete apart."""
    config = tmp_path / "routes.yaml"
    config.write_text(
        'version: 1\nrouter: {dead_letter: "{orders}:dlq"}\n'
        'sources: [ingress, "{orders}:in", broken]\n'
        'routes: [{name: all, match: "*", to: [out]}]\n'
    )
    assert slot("ingress") != slot(DLQ) == slot("{orders}:in")
    dead_letter(rc, "{orders}:in", 1)
    apart = dead_letter(rc, "ingress", 2)
    rc.set("broken", "not a stream")
    refused = dead_letter(rc, "broken", 3)
    listed = as_json(synapse(curl, "dlq", "list", "--stream", DLQ, "--json"))
    assert listed["total"] == 3 and listed["by_reason"] == {"schema_violation": 3}
    shown = as_json(synapse(curl, "dlq", "show", apart, "--stream", DLQ, "--json"))
    assert shown["source"] == "ingress" and shown["fields"]["n"] == "2"
    result = synapse(curl, "dlq", "redrive", "--stream", DLQ, "--json", config=config)
    assert result.exit_code == 1  # the WRONGTYPE one is refused
    report = json.loads(result.stdout)
    assert report["redriven"] == 2 and report["not_atomic"] == 2  # ingress and broken
    assert [r["id"] for r in report["refused"]] == [refused]
    assert "WRONGTYPE" in report["refused"][0]["why"]
    assert rc.xlen("{orders}:in") == 1 and rc.xlen("ingress") == 1
    [(_, copy)] = rc.xrange("ingress")
    assert copy == {b"type": b"order.new", b"n": b"2"}
    counts = rc.hgetall(keys.redrive_counts(DLQ))  # in the DLQ's slot, either way
    assert sorted(counts.values()) == [b"1", b"1"] and slot(keys.redrive_counts(DLQ)) == slot(DLQ)
    assert [e[0].decode() for e in rc.xrange(DLQ)] == [refused]  # only the refused one stays
    text = synapse(curl, "dlq", "redrive", "--stream", DLQ, "--to", "elsewhere")
    assert text.exit_code == 0
    [note] = [line for line in text.stderr.splitlines() if line.startswith("note:")]
    assert "1 written then deleted, not atomically" in note and DLQ in note
    assert rc.xlen(DLQ) == 0 and rc.xlen("elsewhere") == 1
    dead_letter(rc, "ingress", 4)
    purged = as_json(synapse(curl, "dlq", "purge", "--stream", DLQ, "--yes", "--json"))
    assert purged["deleted"] == 1 and rc.xlen(DLQ) == 0


def test_replay_checkpoint_lives_in_the_destination_slot() -> None:
    """The checkpoint key hashes like its destination, tagged or not (stray braces aside)."""
    for dest in ("model-events", "{orders}:copy", "a{b}c{d}", "x{y"):
        key = checkpoint_key("src", dest, None, None)
        assert slot(key) == slot(dest), (dest, key)
    assert hashed_part("{orders}:copy") == "orders" and hashed_part("x{}y") == "x{}y"


def test_replay_on_a_cluster_is_resumable_and_copies_raw_fields(
    curl: str, rc: RedisCluster, local_cluster: LocalCluster
) -> None:
    """replay copies across slots with its checkpoint beside the destination; a rerun adds none."""
    assert slot("src") != slot("dst")
    for n in range(5):
        rc.execute_command("XADD", "src", "*", "type", "t", "n", str(n), "n", "again")
    first = as_json(synapse(curl, "replay", "src", "--to", "dst", "--json"))
    assert first["copied"] == 5 and slot(first["checkpoint"]) == slot("dst")
    again = as_json(synapse(curl, "replay", "src", "--to", "dst", "--json"))
    assert again["copied"] == 0 and again["resumed_after"] == first["last_id"]
    with local_cluster.client(local_cluster.node_for("dst")) as node:
        node.set_response_callback("XRANGE", lambda reply, **_: reply)
        raw = node.execute_command("XRANGE", "dst", "-", "+")
    assert len(raw) == 5
    assert raw[0][1][:6] == [b"type", b"t", b"n", b"0", b"n", b"again"]  # duplicates kept
    stray = synapse(curl, "replay", "src", "--to", "a}b")
    assert stray.exit_code == 2 and "braces that are not a hash tag" in stray.stderr
    assert len(stray.stderr.strip().splitlines()) == 1


def test_replay_resumes_from_a_checkpoint_written_before_the_hash_tag(url: str) -> None:
    """An interrupted replay from before the tagged key resumes instead of copying again."""
    plain = redis.Redis.from_url(url)
    try:
        ids = [plain.xadd("src", {"n": str(n)}) for n in range(3)]
        legacy = keys.REPLAY_PREFIX + legacy_key("src", "dst", None, None)
        plain.hset(legacy, "last", ids[1])
        result = as_json(synapse(url, "replay", "src", "--to", "dst", "--json"))
        assert result["copied"] == 1 and result["resumed_after"] == ids[1].decode()
        restarted = as_json(synapse(url, "replay", "src", "--to", "dst", "--restart", "--json"))
        assert restarted["copied"] == 3 and not plain.exists(legacy)
    finally:
        plain.close()


def test_router_on_a_cluster_shows_in_services_and_topology(
    curl: str, rc: RedisCluster, tmp_path: Path
) -> None:
    """A router process on a cluster registers (heartbeat MULTI in one slot); services/topology."""
    config = write_table(tmp_path / "cfg", TABLE)
    router = RouterProcess(config, curl, consumer="cli-r1", log_path=tmp_path / "r1.log").start()

    def registered() -> list[Any]:
        found: list[Any] = as_json(synapse(curl, "services", "--json"))["services"]
        return found

    try:
        wait_sync(lambda: bool(registered()), 20, "the router in `synapse services`")
        [svc] = registered()
        assert (svc["name"], svc["instance"], svc["kind"]) == ("synapse-router", "cli-r1", "router")
        assert svc["consumes"] == ["{orders}:in", "ingress"]
        rc.xadd("{orders}:in", {"type": "order.new", "data": "{}"})
        wait_sync(lambda: rc.exists("{orders}:billing") == 1, 10, "the order routed")
        graph = as_json(synapse(curl, "topology", "--json", config=config))
        nodes = {n["id"]: n for n in graph["nodes"]}
        assert nodes["router:synapse-router"]["instances"] == 1
        assert nodes["stream:{orders}:billing"]["length"] == 1
        edges = {(e["from"], e["to"]): e for e in graph["edges"]}
        assert edges[("stream:{orders}:in", "router:synapse-router")]["group"] == "synapse-router"
        assert edges[("stream:{orders}:in", "router:synapse-router")]["pending"] == 0
        assert edges[("router:synapse-router", "route:orders")]
        assert "registry_heartbeat_failed" not in router.text()
    finally:
        code = router.stop()
    assert code == 0, router.text()
    assert registered() == []  # deregistered on a clean stop


def test_wrong_or_unreachable_urls_fail_in_one_line(
    url: str, local_cluster: LocalCluster, curl: str
) -> None:
    """A dead cluster URL, a plain server behind a cluster URL, a cluster node behind redis://."""
    dead = f"redis+cluster://127.0.0.1:{free_port()}"
    plain = url.replace("redis://", "redis+cluster://").rsplit("/", 1)[0]
    home = local_cluster.node_for("somewhere").port
    other = next(n for n in local_cluster.primary_nodes() if n.port != home)
    cases = [
        (dead, "services", f"Redis Cluster at {dead}: Redis Cluster cannot be connected"),
        (dead, "streams", f"Redis Cluster at {dead}: Redis Cluster cannot be connected"),
        (plain, "streams", "Cluster mode is not enabled on this node"),
        (f"redis://127.0.0.1:{other.port}", "tail", "use redis+cluster://host:port"),
    ]
    for target, command, said in cases:
        args = [command, "somewhere"] if command == "tail" else [command]
        result = synapse(target, *args)
        assert result.exit_code == 1, result.output
        assert result.stderr.count("\n") == 1 and said in result.stderr, result.stderr


def test_tail_follow_on_a_cluster_in_a_real_process(curl: str, rc: RedisCluster) -> None:
    """`synapse tail --follow` on a cluster URL prints new entries; Ctrl-C ends it with 130."""
    rc.xadd("feed", {"type": "t", "n": "0"})
    env = {**os.environ, "SYNAPSE_REDIS_URL": curl, "SYNAPSE_CONFIG": "/nonexistent/routes.yaml"}
    synapse_bin = str(Path(sys.executable).parent / "synapse")
    command = [synapse_bin, "tail", "feed", "-n", "1", "--follow", "--json"]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            assert json.loads(process.stdout.readline())["fields"]["n"] == "0"  # now following
            rc.xadd("feed", {"type": "t", "n": "1"})
            assert json.loads(process.stdout.readline())["fields"]["n"] == "1"
        finally:
            process.send_signal(signal.SIGINT)
            code = process.wait(10)
        assert code == 130, process.stderr.read()


async def test_heartbeat_survives_a_cluster_with_no_node_reachable() -> None:
    """A heartbeat on an unreachable cluster logs and retries; it never ends the router."""
    client = wire.connect_any(f"redis+cluster://127.0.0.1:{free_port()}", read_timeout_s=1)
    beat = registry.Heartbeat(client, lambda: registry.ServiceInfo(name="r"), ttl_s=0.15)
    task = asyncio.create_task(beat.run())
    try:
        await wait_for(lambda: beat.failures >= 2 or task.done(), 10, "two failed beats")
        assert not task.done() and beat.beats == 0
    finally:
        beat.stop()
        await task
        await client.aclose()
