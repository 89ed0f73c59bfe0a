"""synapse-gateway on a kafka:// URL: a real gateway, a real tansu broker, real HTTP clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

from synapse.backends import kafkaadmin
from synapse.gateway.access import StreamPolicy
from synapse.gateway.kafkacatchup import READERS
from synapse.tansu import TansuBroker
from tests.conftest import wait_for
from tests.gateway.conftest import base_url, serving
from tests.gateway.process import GatewayProcess
from tests.gateway.sse import Message, SSEClient, open_events, status_of
from tests.kafka.support import produce, rdkafka_threads

PARTITIONS = 3


def make_topic(broker: TansuBroker, name: str, partitions: int = PARTITIONS) -> str:
    kafkaadmin.ensure_topics(broker.bootstrap, [name], partitions=partitions)
    return name


async def publish(
    broker: TansuBroker,
    topic: str,
    event_type: str,
    n: int,
    *,
    start: int = 0,
    headers: list[tuple[str, bytes]] | None = None,
) -> list[str]:
    """n records of ``event_type`` spread over the partitions (one key each); their ids."""
    ids: list[str] = []
    for i in range(start, start + n):
        body = json.dumps({"n": i}).encode()
        hdrs = [("type", event_type.encode()), *(headers or [])]
        found = await asyncio.to_thread(
            produce,
            broker.bootstrap,
            topic,
            [body],
            headers=hdrs,
            partition=i % PARTITIONS,
            batched=False,
        )
        ids += [raw.decode() for raw in found]
    return ids


def by_partition(ids: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for entry_id in ids:
        p, o = entry_id.split("-")
        out.setdefault(p, []).append(int(o))
    return out


async def take_ids(sse: SSEClient, n: int, timeout_s: float = 20) -> list[str]:
    return [m.data["entry_id"] for m in await sse.take(n, timeout_s)]


async def test_a_topic_is_served_live_with_the_event_json_and_a_cursor_per_partition(
    broker: TansuBroker, topic: str
) -> None:
    """Starts at the live end; each message: `event:` the type, the event JSON with
    `<partition>-<offset>` ids and the record's timestamp as time, `id:` every partition."""
    make_topic(broker, topic)
    old = await publish(broker, topic, "model.old", 3)
    async with serving(broker.url) as gw:
        sse = await open_events(base_url(gw), f"stream={topic}")
        try:
            await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
            new = await publish(broker, topic, "model.ready", 6, start=3)
            stamped = await publish(
                broker,
                topic,
                "model.ready",
                1,
                start=9,
                headers=[("time", b"2026-01-02T03:04:05Z")],
            )
            got = await sse.take(7, timeout_s=20)
        finally:
            await sse.close()
    ids = [m.data["entry_id"] for m in got]
    assert sorted(ids) == sorted(new + stamped) and not set(ids) & set(old)
    assert by_partition(ids) == by_partition(new + stamped)  # each partition in its order
    first: Message = got[0]
    assert first.event == "model.ready" == first.data["type"]
    assert set(first.data) == {"type", "data", "id", "time", "source", "stream", "entry_id"}
    assert first.data["stream"] == topic and first.data["data"]["n"] in range(3, 9)
    assert first.data["time"].endswith("Z") and first.data["time"].startswith("20")
    [own] = [m for m in got if m.data["entry_id"] == stamped[0]]
    assert own.data["time"] == "2026-01-02T03:04:05Z", own  # the event's own time wins
    # the cursor names every partition: the offset each one reads next
    last_by_p = {p: max(o) for p, o in by_partition(ids).items()}
    pairs = dict(pair.split("/")[1].split("-") for pair in got[-1].id.split(","))  # type: ignore[union-attr]
    assert set(pairs) == {"0", "1", "2"}
    assert all(int(pairs[p]) == last_by_p[p] + 1 for p in last_by_p)


async def test_type_filter_serves_only_matching_types(broker: TansuBroker, topic: str) -> None:
    """`type=GLOB` passes only the matching event types, on Kafka as on Redis."""
    make_topic(broker, topic, partitions=1)
    async with serving(broker.url) as gw:
        sse = await open_events(base_url(gw), f"stream={topic}&type=model.*&type=x.a")
        try:
            await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
            for t in ("model.ready", "inference.done", "x.a", "x.c", "model.gone"):
                await asyncio.to_thread(
                    produce, broker.bootstrap, topic, [b"{}"], headers=[("type", t.encode())]
                )
            got = await sse.take(3, timeout_s=20)
            assert [m.data["type"] for m in got] == ["model.ready", "x.a", "model.gone"]
        finally:
            await sse.close()


async def test_resume_across_partitions_misses_nothing_and_repeats_nothing(
    broker: TansuBroker, topic: str
) -> None:
    """Cut while records keep coming on every partition, some written while nobody
    watches, more while the client resumes: Last-Event-ID resumes each partition right
    after its cursor; every record arrives once, each partition in its order."""
    make_topic(broker, topic)
    produced: list[str] = []
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set() and i < 3000:
            values = [json.dumps({"n": i + k}).encode() for k in range(5)]
            ids = produce(broker.bootstrap, topic, values, headers=[("type", b"t")], key=b"%d" % i)
            produced.extend(raw.decode() for raw in ids)
            i += 5

    async with serving(broker.url) as gw:
        base = base_url(gw)
        first = await open_events(base, f"stream={topic}")
        await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            early = await take_ids(first, 40)
            cursor = first.last_id
            await first.close()
            await wait_for(lambda: gw.hub.subscribers == 0, what="first client gone")
            gone_at = len(produced)
            await wait_for(lambda: len(produced) >= gone_at + 30, what="records while away")
            second = await open_events(base, f"stream={topic}", {"Last-Event-ID": cursor or ""})
            resumed_at = len(produced)
            await wait_for(lambda: len(produced) >= resumed_at + 50, what="records after resume")
            stop.set()
            await asyncio.to_thread(feeder.join)
            rest = await take_ids(second, len(produced) - len(early), timeout_s=30)
            cut = second.last_id
            await second.close()
            final = await publish(broker, topic, "t", 4)
            third = await open_events(base, f"stream={topic}&last_event_id={cut}")
            try:
                assert sorted(await take_ids(third, 4)) == sorted(final)
            finally:
                await third.close()
        finally:
            stop.set()
            feeder.join()
    ids = early + rest
    assert len(ids) == len(set(ids)) == len(produced)
    assert by_partition(ids) == by_partition(produced)
    assert gw.metrics.catchup_events._value.get() >= 30  # type: ignore[attr-defined]


async def test_two_topics_resume_each_from_its_own_pairs(broker: TansuBroker, topic: str) -> None:
    """A two-topic cursor resumes both; a topic made after the client joined is read from
    its first record."""
    a = make_topic(broker, topic + ".a")
    b = topic + ".b"  # made later
    async with serving(broker.url) as gw:
        base = base_url(gw)
        sse = await open_events(base, f"stream={a}&stream={b}")
        await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
        await publish(broker, a, "t", 3)
        seen = await sse.take(3, timeout_s=20)
        assert seen[-1].id is not None and seen[-1].id.endswith(f"{b}/0-0")
        await sse.close()
        missed = await publish(broker, a, "t", 3, start=3)
        make_topic(broker, b)
        missed += await publish(broker, b, "t", 4)
        again = await open_events(base, f"stream={a}&stream={b}", {"Last-Event-ID": seen[-1].id})
        try:
            assert sorted(await take_ids(again, 7)) == sorted(missed)
        finally:
            await again.close()


async def test_a_cursor_of_hundreds_of_partitions_is_taken_by_header(
    broker: TansuBroker, topic: str
) -> None:
    """A cursor grows with partitions (a pair each): one of 400 pairs (~30 KB with this long
    topic name, past the usual 8 KB header limit) is taken as Last-Event-ID and resumes."""
    make_topic(broker, topic)
    async with serving(broker.url) as gw:
        base = base_url(gw)
        first = await open_events(base, f"stream={topic}")
        await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
        await publish(broker, topic, "t", 3)
        await first.take(3)
        await first.close()
        missed = await publish(broker, topic, "t", 3, start=3)
        more = ",".join(f"{topic}/{p}-0" for p in range(3, 400))  # as if 400 partitions
        cursor = f"{first.last_id},{more}"
        assert len(cursor) > 8192
        again = await open_events(base, f"stream={topic}", {"Last-Event-ID": cursor})
        try:
            assert sorted(await take_ids(again, 3)) == sorted(missed)
        finally:
            await again.close()


async def test_kafka_clients_stay_constant_as_browsers_grow(
    broker: TansuBroker, topic: str
) -> None:
    """One assigned reader and one control consumer for every live client; resuming
    clients share at most the catch-up pool, never a consumer each."""
    a, b = make_topic(broker, topic + ".a"), make_topic(broker, topic + ".b")

    def clients() -> int:
        return rdkafka_threads().count("rdk:main")  # one main thread per librdkafka client

    outside = clients()  # the test's own admin client
    async with serving(broker.url) as gw:
        base = base_url(gw)
        before = clients()
        crowd = [await open_events(base, f"stream={a}&stream={b}") for _ in range(12)]
        crowd += [await open_events(base, f"stream={b}&type=x.*") for _ in range(12)]
        try:
            await wait_for(lambda: gw.hub.subscribers == 24, what="24 subscribed")
            assert clients() == before == outside + 2
            ids = await publish(broker, a, "x.a", 3) + await publish(broker, b, "x.b", 3)
            for sse in crowd[:12]:
                assert sorted(await take_ids(sse, 6)) == sorted(ids)
            cursor = crowd[0].last_id or ""
            missed = await publish(broker, a, "x.a", 6, start=3)
            resumed = [
                await open_events(base, f"stream={a}&stream={b}", {"Last-Event-ID": cursor})
                for _ in range(12)
            ]
            crowd += resumed
            for sse in resumed:
                assert sorted(await take_ids(sse, 6)) == sorted(missed)
            # (the test's own producers end asynchronously after close: wait them out)
            await wait_for(lambda: clients() <= before + READERS, what="at most the pool more")
        finally:
            for sse in crowd:
                await sse.close()


async def test_client_cap_health_and_metrics_as_on_redis(broker: TansuBroker, topic: str) -> None:
    """The cap answers 503 with Retry-After; /healthz, /readyz and /metrics keep their
    names and meaning on Kafka."""
    make_topic(broker, topic)
    async with serving(broker.url, max_clients=1) as gw:
        base = base_url(gw)
        sse = await open_events(base, f"stream={topic}")
        try:
            await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
            status, _, headers = await status_of(f"{base}/events?stream={topic}")
            assert status == 503 and headers["Retry-After"] == "5"
            ids = await publish(broker, topic, "t", 3)
            assert sorted(await take_ids(sse, 3)) == sorted(ids)
            assert (await status_of(f"{base}/healthz"))[:2] == (200, "ok\n")
            assert (await status_of(f"{base}/readyz"))[:2] == (200, "ready\n")
            _, text, _ = await status_of(f"{base}/metrics")
            assert "synapse_gateway_redis_up 1.0" in text
            assert "synapse_gateway_events_read_total 3.0" in text
            assert 'synapse_gateway_requests_refused_total{reason="over_capacity"} 1.0' in text
        finally:
            await sse.close()


async def test_internal_and_unserved_topics_get_403(broker: TansuBroker, topic: str) -> None:
    """synapse.* topics (dead letters, registry) and Kafka's __* only by exact name;
    --streams globs decide the rest."""
    async with serving(broker.url) as gw:
        base = base_url(gw)
        for name in ("synapse.dlq", "synapse.registry", "__consumer_offsets"):
            status, body, _ = await status_of(f"{base}/events?stream={name}")
            assert status == 403 and name in body
    policy = StreamPolicy(("synapse.dlq", "public-*", "synapse.*"))
    make_topic(broker, "synapse.dlq", partitions=1)
    async with serving(broker.url, policy=policy) as gw:
        base = base_url(gw)
        assert (await status_of(f"{base}/events?stream={topic}"))[0] == 403
        assert (await status_of(f"{base}/events?stream=synapse.registry"))[0] == 403
        sse = await open_events(base, "stream=synapse.dlq")
        await sse.close()
        status, body, _ = await status_of(f"{base}/streams")
        assert status == 200 and json.loads(body)["streams"] == ["synapse.dlq"]


async def test_bad_cursor_and_illegal_topic_get_400_with_the_reason(
    broker: TansuBroker, topic: str
) -> None:
    """A Last-Event-ID this gateway did not write, or a name Kafka cannot have: 400, why."""
    make_topic(broker, topic)
    async with serving(broker.url) as gw:
        base = base_url(gw)
        for bad in (f"{topic}/x-1", f"{topic}/0-1,", "nonsense", f"{topic}/999999-1"):
            status, body, _ = await status_of(
                f"{base}/events?stream={topic}", {"Last-Event-ID": bad}
            )
            assert status == 400 and "bad Last-Event-ID" in body, (bad, body)
        status, body, _ = await status_of(f"{base}/events?stream=orders:in")
        assert status == 400 and "not a Kafka topic" in body
        assert gw.hub.positions == {}


async def test_broker_away_readyz_503_then_recovers(tmp_path: Path) -> None:
    """Broker killed: /readyz 503 and new clients 503, the connected client kept; back on
    the same port (tansu comes back empty, the topic is made again, its offsets start
    over): ready again, and both the kept client and a new one get the new records."""
    broker = TansuBroker(log_dir=tmp_path / "tansu").start()
    topic = "gw.outage"
    try:
        make_topic(broker, topic)
        async with serving(broker.url, block_ms=200) as gw:
            base = base_url(gw)
            kept = await open_events(base, f"stream={topic}")
            await wait_for(lambda: gw.hub.subscribers == 1, what="subscribed")
            before = await publish(broker, topic, "t", 9)  # offsets 0-2 on each partition
            assert sorted(await take_ids(kept, 9)) == sorted(before)
            assert (await status_of(f"{base}/readyz"))[0] == 200
            kafkaadmin.forget_all()
            broker.kill()
            await wait_for(lambda: not gw.hub.ready, timeout_s=30, what="not ready")
            status, body, _ = await status_of(f"{base}/readyz")
            assert status == 503 and "Kafka" in body
            assert (await status_of(f"{base}/events?stream={topic}.other"))[0] == 503
            assert gw.metrics.redis_up._value.get() == 0  # type: ignore[attr-defined]
            broker.start()
            await wait_for(lambda: gw.hub.ready, timeout_s=40, what="ready again")
            assert (await status_of(f"{base}/readyz"))[0] == 200
            make_topic(broker, topic)
            again = await publish(broker, topic, "t", 3)  # offset 0 on each partition
            assert sorted(await take_ids(kept, 3, timeout_s=30)) == sorted(again)
            fresh = await open_events(base, f"stream={topic}")
            try:
                await wait_for(lambda: gw.hub.subscribers == 2, what="subscribed")
                later = await publish(broker, topic, "t", 3, start=3)
                assert sorted(await take_ids(fresh, 3)) == sorted(later)
                assert sorted(await take_ids(kept, 3)) == sorted(later)
            finally:
                await fresh.close()
                await kept.close()
    finally:
        kafkaadmin.forget_all()
        broker.stop()


def test_the_command_serves_a_kafka_url_and_refuses_a_bad_one(
    broker: TansuBroker, tmp_path: Path
) -> None:
    """`synapse-gateway --url kafka://...` starts ready and logs the store; a malformed
    kafka:// URL is exit 2 naming its problem."""
    from synapse.child import free_port

    port = free_port()
    gw = GatewayProcess(["--url", broker.url, "--listen", f"127.0.0.1:{port}"], tmp_path / "gw.log")
    try:
        gw.wait_ready(f"http://127.0.0.1:{port}")
    finally:
        assert gw.stop() == 0
    assert '"store": "Kafka"' in gw.log() and "synapse." in gw.log()
    bad = GatewayProcess(["--url", "kafka://h:1/path"], tmp_path / "bad.log")
    assert bad.proc.wait(30) == 2
    assert "no path" in bad.log()
    bad.stop()


def test_the_gateway_loads_no_kafka_client_until_a_kafka_url() -> None:
    """confluent-kafka (the `kafka` extra) is imported only when a kafka:// URL is used."""
    code = (
        "import sys, synapse.gateway.main, synapse.gateway.app\n"
        "from synapse.gateway.hub import Hub\n"
        "from synapse.gateway.metrics import GatewayMetrics\n"
        "Hub('redis://127.0.0.1:1', GatewayMetrics())\n"
        "print('confluent_kafka' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout.strip() == b"False"
