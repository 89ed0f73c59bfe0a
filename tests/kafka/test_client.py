"""synapse.client.Bus on Kafka (tansu): publish, subscribe, retries, dead letters, restarts,
two instances of one service, the registry."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from synapse.backends import kafkaadmin as admin
from synapse.client import Bus, Event, PublishRefused
from synapse.client.kafka_io import KafkaStreams
from synapse.embedded import free_port
from synapse.tansu import TansuBroker
from tests.client.conftest import serving
from tests.client.procs import Program
from tests.conftest import write_table
from tests.kafka.support import produce, read_back
from tests.support.polling import wait_for, wait_sync


def committed(bootstrap: str, group: str, topic: str) -> int:
    """The sum over ``topic``'s partitions of ``group``'s committed offsets (on a new topic:
    the records the group is done with)."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        meta = reader.list_topics(topic, timeout=10).topics[topic]
        found = reader.committed([TopicPartition(topic, p) for p in meta.partitions], timeout=10)
        return sum(max(0, tp.offset) for tp in found)
    finally:
        reader.close()


def io_of(bus: Bus) -> KafkaStreams:
    assert bus.subscriber is not None and isinstance(bus.subscriber.io, KafkaStreams)
    return bus.subscriber.io


async def test_publish_writes_the_envelope_as_headers_and_the_body_as_value(
    broker: TansuBroker, topic: str
) -> None:
    """publish / publish_many on Kafka: value = the JSON body, headers = type and the
    CloudEvents fields, key = publish(key=) (none by default); the ids come back in order."""
    async with Bus("trainer", url=broker.url, register=False) as bus:
        first = await bus.publish("model.ready", {"model_id": "m1"}, stream=topic, key="m1")
        more = await bus.publish_many([("a.b", {"n": 1}), ("a.c", {"n": 2})], stream=topic)
    got = await asyncio.to_thread(read_back, broker.bootstrap, topic, 3)
    by_id = {g.headers["id"].decode(): g for g in got}
    assert sorted(by_id) == sorted([first, *more]) and len(got) == 3
    one = by_id[first]
    assert one.key == b"m1" and json.loads(one.value or b"") == {"model_id": "m1"}
    assert one.headers["type"] == b"model.ready" and one.headers["source"] == b"trainer"
    assert one.headers["specversion"] == b"1.0" and one.headers["time"].endswith(b"Z")
    assert "data" not in one.headers
    assert [by_id[i].headers["type"] for i in more] == [b"a.b", b"a.c"]
    assert by_id[more[0]].key is None


async def test_subscriber_handles_wanted_types_and_skips_others(
    broker: TansuBroker, topic: str
) -> None:
    """Only events of the subscribed types reach the handler; the others are committed past
    unseen (the group's committed offset reaches the end)."""
    bus = Bus("runtime", url=broker.url, register=False, block_ms=200)
    seen: list[Event] = []

    @bus.subscribe(topic, types="model.ready", start="earliest")
    async def handle(event: Event) -> None:
        seen.append(event)

    async with serving(bus):
        await bus.publish("model.ready", {"model_id": "m1"}, stream=topic, key="k")
        await bus.publish("model.retired", {"model_id": "m0"}, stream=topic, key="k")
        await bus.publish("model.ready", {"model_id": "m2"}, stream=topic, key="k")
        await wait_for(lambda: len(seen) == 2 and bus.subscriber.skipped == 1, 30)  # type: ignore[union-attr]
        await wait_for(lambda: committed(broker.bootstrap, "runtime", topic) == 3, 30)
    assert [e.data["model_id"] for e in seen] == ["m1", "m2"]
    assert seen[0].source == "runtime" and seen[0].stream == topic
    assert seen[0].entry_id.count("-") == 1


async def test_failing_handler_is_retried_then_dead_lettered(
    broker: TansuBroker, topic: str
) -> None:
    """A raising handler is retried with backoff, then dead-lettered (handler_error, the
    exception's last line, synapse-consumer, the record's key) and committed past; the
    records behind it are handled and committed too."""
    dlq = f"{topic}.dlq"
    bus = Bus("runtime", url=broker.url, register=False, block_ms=200, dead_letter=dlq)
    calls: list[int] = []
    good: list[str] = []

    @bus.subscribe(topic, max_deliveries=3, retry_backoff_s=0.05, start="earliest")
    async def handle(event: Event) -> None:
        if event.data.get("bad"):
            calls.append(event.deliveries)
            raise ValueError(f"cannot load {event.data['bad']}")
        good.append(event.data["k"])

    async with serving(bus):
        await bus.publish("job.run", {"bad": "x"}, stream=topic, key="job-1")
        await bus.publish_many([("job.run", {"k": str(i)}) for i in range(5)], stream=topic)
        await wait_for(lambda: len(good) == 5 and bus.subscriber.dead_lettered == 1, 30)  # type: ignore[union-attr]
        await wait_for(lambda: committed(broker.bootstrap, "runtime", topic) == 6, 30)
    assert calls == [1, 2, 3]
    [dead] = await asyncio.to_thread(read_back, broker.bootstrap, dlq, 1)
    assert dead.key == b"job-1" and json.loads(dead.value or b"") == {"bad": "x"}
    assert dead.headers["synapse-reason"] == b"handler_error"
    assert dead.headers["synapse-error"] == b"ValueError: cannot load x"
    assert dead.headers["synapse-consumer"] == b"runtime"
    assert dead.headers["synapse-source"] == topic.encode()
    assert dead.headers["synapse-deliveries"] == b"3"
    assert dead.headers["type"] == b"job.run"


async def test_attempts_survive_a_restart(broker: TansuBroker, topic: str) -> None:
    """A record whose handler failed is not committed past when the instance stops; the
    next instance gets it as delivery 2 (synapse.attempts) and dead-letters it at
    max_deliveries=2."""
    dlq = f"{topic}.dlq"
    calls: list[int] = []

    def make() -> Bus:
        bus = Bus("restarts", url=broker.url, register=False, block_ms=200, dead_letter=dlq)

        @bus.subscribe(topic, max_deliveries=2, retry_backoff_s=600, start="earliest")
        async def handle(event: Event) -> None:
            calls.append(event.deliveries)
            raise RuntimeError("boom")

        return bus

    first = make()
    async with serving(first):
        await first.publish("job.run", {"n": 1}, stream=topic)
        await wait_for(lambda: calls == [1], 30)
    assert committed(broker.bootstrap, "restarts", topic) == 0
    second = make()
    async with serving(second):
        await wait_for(lambda: second.subscriber.dead_lettered == 1, 30)  # type: ignore[union-attr]
        await wait_for(lambda: committed(broker.bootstrap, "restarts", topic) == 1, 30)
    assert calls == [1, 2]
    [dead] = await asyncio.to_thread(read_back, broker.bootstrap, dlq, 1)
    assert dead.headers["synapse-deliveries"] == b"2"
    assert dead.headers["synapse-reason"] == b"handler_error"


async def test_two_instances_of_one_service_share_the_partitions(
    broker: TansuBroker, topic: str
) -> None:
    """Two instances of one service split the topic's partitions (the group's assignment)
    and together handle every event once; both handle some."""
    await asyncio.to_thread(admin.ensure_topics, broker.bootstrap, [topic], partitions=4)
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def make(name: str) -> Bus:
        bus = Bus("workers", url=broker.url, register=False, block_ms=200)

        @bus.subscribe(topic, start="earliest")
        async def handle(event: Event) -> None:
            seen[name].append(event.data["n"])

        return bus

    a, b = make("a"), make("b")
    async with serving(a), serving(b):

        def split() -> bool:
            mine = {at for at in io_of(a).backend.assigned() if at[0] == topic}
            theirs = {at for at in io_of(b).backend.assigned() if at[0] == topic}
            return bool(mine) and bool(theirs) and not mine & theirs and len(mine | theirs) == 4

        await wait_for(
            split,
            60,
            lambda: (
                f"both holding partitions: {io_of(a).backend.assigned()} "
                f"{io_of(b).backend.assigned()}"
            ),
        )
        await a.publish_many([("job.run", {"n": str(i)}) for i in range(40)], stream=topic)
        for i in range(40, 80):
            await a.publish("job.run", {"n": str(i)}, stream=topic, key=f"k{i}")
        await wait_for(lambda: len(seen["a"]) + len(seen["b"]) >= 80, 60)
    assert sorted(seen["a"] + seen["b"], key=int) == [str(i) for i in range(80)]
    assert seen["a"] and seen["b"]


async def test_commit_waits_for_the_first_unfinished_record_of_a_partition(
    broker: TansuBroker, topic: str
) -> None:
    """concurrency=4 bounds handlers in flight; while the first record's handler runs, the
    records after it finish but the partition's committed offset stays before it; once it
    returns, the offset moves past all of them."""
    await asyncio.to_thread(admin.ensure_topics, broker.bootstrap, [topic], partitions=1)
    bus = Bus("bounded", url=broker.url, register=False, block_ms=200)
    release = asyncio.Event()
    running: list[int] = []
    peak: list[int] = []
    done: list[int] = []

    @bus.subscribe(topic, concurrency=4, start="earliest")
    async def handle(event: Event) -> None:
        running.append(1)
        peak.append(len(running))
        try:
            if event.data["n"] == 0:
                await release.wait()
            else:
                await asyncio.sleep(0.01)
        finally:
            running.pop()
        done.append(event.data["n"])

    async with serving(bus):
        await bus.publish_many([("job.run", {"n": i}) for i in range(10)], stream=topic)
        await wait_for(lambda: len(done) == 9, 30, lambda: f"9 done: {done}")
        await io_of(bus).acks.flushed()  # the 9 outcomes are written: the offset stays
        assert committed(broker.bootstrap, "bounded", topic) == 0
        release.set()
        await wait_for(lambda: committed(broker.bootstrap, "bounded", topic) == 10, 30)
    assert max(peak) == 4 and sorted(done) == list(range(10))


@pytest.mark.slow
def test_sigterm_finishes_handlers_in_flight_on_kafka(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """SIGTERM while handlers sleep: they finish, their records are committed past, exit 0."""
    ledger = tmp_path / "ledger"
    worker = Program(
        ["-m", "tests.client.worker", "--service", "drainer", "--stream", topic,
         "--ledger", str(ledger), "--sleep-ms", "1500", "--start", "earliest"],
        broker.url,
        tmp_path / "worker.log",
    )  # fmt: skip
    try:
        worker.wait_for("ready", 60)
        produce(
            broker.bootstrap, topic, [json.dumps({"n": i}).encode() for i in range(5)],
            headers=[("type", b"job.run")],
        )  # fmt: skip
        wait_sync(lambda: ledger.exists() and ledger.read_text().count("start") == 5, 30)
        assert worker.stop(60) == 0
    finally:
        worker.kill()
    lines = ledger.read_text().splitlines()
    assert sum(line.startswith("done") for line in lines) == 5
    assert committed(broker.bootstrap, "drainer", topic) == 5


async def test_dedupe_marks_are_shared_through_the_marks_topic(
    broker: TansuBroker, topic: str
) -> None:
    """With dedupe_s, a second copy of an event (same id) is committed without calling the
    handler, also in a later instance of the service (the marks are read back from
    synapse.dedupe.<service>)."""
    handled: list[str] = []

    def make() -> Bus:
        bus = Bus("once", url=broker.url, register=False, block_ms=200)

        @bus.subscribe(topic, dedupe_s=60, start="earliest")
        async def handle(event: Event) -> None:
            handled.append(event.data["n"])

        return bus

    first = make()
    async with serving(first):
        await first.publish("job.run", {"n": "a"}, stream=topic, id="event-1")
        await wait_for(lambda: handled == ["a"], 30)
        await first.publish("job.run", {"n": "a-again"}, stream=topic, id="event-1")
        await wait_for(lambda: first.subscriber.deduped == 1, 30)  # type: ignore[union-attr]
        await wait_for(lambda: committed(broker.bootstrap, "once", topic) == 2, 30)
    second = make()
    async with serving(second):
        await second.publish("job.run", {"n": "a-later"}, stream=topic, id="event-1")
        await second.publish("job.run", {"n": "b"}, stream=topic, id="event-2")
        await wait_for(lambda: committed(broker.bootstrap, "once", topic) == 4, 30)
        assert second.subscriber is not None and second.subscriber.deduped == 1
    assert handled == ["a", "b"]


async def test_a_new_group_starts_at_the_end_by_default(broker: TansuBroker, topic: str) -> None:
    """start="latest" (the default): a record published before the service's first start
    is not handled; one published once it is ready is."""
    await asyncio.to_thread(admin.ensure_topics, broker.bootstrap, [topic], partitions=1)
    produce(broker.bootstrap, topic, [b'{"n": "old"}'], headers=[("type", b"job.run")])
    bus = Bus("fresh", url=broker.url, register=False, block_ms=200)
    seen: list[str] = []

    @bus.subscribe(topic)
    async def handle(event: Event) -> None:
        seen.append(event.data["n"])

    async with serving(bus):
        await bus.publish("job.run", {"n": "new"}, stream=topic)
        await wait_for(
            lambda: committed(broker.bootstrap, "fresh", topic) == 2,
            30,
            lambda: f"{seen} {committed(broker.bootstrap, 'fresh', topic)}",
        )
    assert seen == ["new"]


@pytest.mark.slow
def test_a_killed_instance_s_records_are_handled_by_the_live_one(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """kill -9 of one of two instances while its handlers run: the group gives its
    partitions to the other (the claim of a dead instance on Kafka), which handles every
    record the dead one had not finished; nothing is lost."""
    admin.ensure_topics(broker.bootstrap, [topic], partitions=2)
    ledger = tmp_path / "ledger"

    def worker(name: str) -> Program:
        return Program(
            ["-m", "tests.client.worker", "--service", "claimers", "--stream", topic,
             "--ledger", str(ledger), "--sleep-ms", "3000", "--start", "earliest"],
            broker.url,
            tmp_path / f"{name}.log",
        )  # fmt: skip

    first, second = worker("first"), worker("second")
    try:
        first.wait_for("ready", 60)
        second.wait_for("ready", 60)
        for p in (0, 1):
            values = [json.dumps({"n": f"{p}-{i}"}).encode() for i in range(5)]
            produce(broker.bootstrap, topic, values, headers=[("type", b"job.run")], partition=p)

        def lines() -> list[list[str]]:
            return (
                [line.split() for line in ledger.read_text().splitlines()]
                if ledger.exists()
                else []
            )

        wait_sync(lambda: any(int(x[3]) == first.pid for x in lines()), 30, "first handling")
        first.kill()
        wanted = {f"{p}-{i}" for p in (0, 1) for i in range(5)}
        wait_sync(lambda: {x[1] for x in lines() if x[0] == "done"} >= wanted, 90,
                  lambda: f"every record done: {lines()}")  # fmt: skip
        assert second.stop(60) == 0
    finally:
        first.kill()
        second.kill()
    rows = lines()
    lost_by_first = {x[1] for x in rows if int(x[3]) == first.pid and x[0] == "start"} - {
        x[1] for x in rows if int(x[3]) == first.pid and x[0] == "done"
    }
    assert lost_by_first, "the kill came while the first instance had handlers running"
    assert all(
        any(x[0] == "done" and x[1] == n and int(x[3]) == second.pid for x in rows)
        for n in lost_by_first
    )


async def test_a_subscriber_started_before_its_broker_recovers_by_itself(
    topic: str, tmp_path: Path
) -> None:
    """No broker at the URL: run() is not ready and keeps backing off (no crash); once a
    broker listens there, the subscriber joins and handles what is published."""
    port = free_port()
    bus = Bus("patient", url=f"kafka://127.0.0.1:{port}", register=False, block_ms=200)
    seen: list[str] = []

    @bus.subscribe(topic, start="earliest")
    async def handle(event: Event) -> None:
        seen.append(event.data["n"])

    task = asyncio.create_task(bus.run())
    try:
        await wait_for(lambda: bus.subscriber is not None, 10)
        assert bus.subscriber is not None and not bus.subscriber.ready and not task.done()
        with TansuBroker(log_dir=tmp_path / "late", port=port) as late:
            await wait_for(lambda: bus.subscriber is not None and bus.subscriber.ready, 60)
            await bus.publish("job.run", {"n": "after"}, stream=topic)
            await wait_for(lambda: seen == ["after"], 30)
            assert late.port == port
            bus.stop()
            await asyncio.wait_for(task, 30)
    finally:
        bus.stop()
        if not task.done():
            task.cancel()


async def test_the_service_retry_topic_is_read_from_its_beginning(
    broker: TansuBroker, topic: str
) -> None:
    """A record in synapse.retry.<service> (where `dlq redrive` sends a handler dead letter)
    reaches the subscription that wants its type, even when written before the service's
    first start and with start="latest" on its other topics."""
    async with Bus("redriven", url=broker.url, register=False) as writer:
        await writer.publish("job.run", {"n": "again"}, stream="synapse.retry.redriven")
    bus = Bus("redriven", url=broker.url, register=False, block_ms=200)
    seen: list[Event] = []

    @bus.subscribe(topic, types="job.*")
    async def handle(event: Event) -> None:
        seen.append(event)

    async with serving(bus):
        await wait_for(lambda: len(seen) == 1, 30)
    assert seen[0].data == {"n": "again"} and seen[0].stream == "synapse.retry.redriven"


async def test_publish_checks_the_kafka_table_and_writes_nothing_it_refuses(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """Bus(config=) on Kafka refuses schema violations (every error) and unroutable types
    before producing (the topic is not even created); publish goes to the table's first
    source by default; strict=False lets an unrouted type through."""
    schema = {
        "type": "object",
        "required": ["model_id", "version"],
        "properties": {"model_id": {"type": "string"}, "version": {"type": "string"}},
    }
    config = write_table(
        tmp_path,
        f"""
        version: 1
        sources: ["{topic}"]
        schemas:
          "model.*": model.json
        routes:
          - name: models
            match: "model.*"
            to: ["{topic}.models"]
        """,
        {"model.json": schema},
    )
    async with Bus("trainer", url=broker.url, config=config, register=False) as bus:
        assert bus.dead_letter == "synapse.dlq"
        with pytest.raises(PublishRefused) as bad:
            await bus.publish("model.ready", {"model_id": 3})
        assert bad.value.reason == "schema_violation" and len(bad.value.errors) == 2
        with pytest.raises(PublishRefused) as unrouted:
            await bus.publish("other.thing", {})
        assert unrouted.value.reason == "no_route"
        assert topic not in await asyncio.to_thread(admin.topics, broker.bootstrap)
        await bus.publish("model.ready", {"model_id": "m", "version": "1"})
    async with Bus("trainer", url=broker.url, config=config, strict=False, register=False) as b:
        await b.publish("other.thing", {})
    got = await asyncio.to_thread(read_back, broker.bootstrap, topic, 2)
    assert sorted(g.headers["type"] for g in got) == [b"model.ready", b"other.thing"]
