"""What the ``synapse`` commands cost on Kafka (tansu), one run: reading a topic to count it
(``streams info --exact``) against the broker's end offsets, and ``replay`` copying it.

A topic of ``--events`` records (~320 bytes, 3 partitions, batched produce) is made on a
fresh tansu; each command runs in-process (click's runner) ``--reps`` times, interleaved;
medians. Prints seconds and records/s, and the exact count's time as a ratio of the
end-offset one measured in the same run.

    .venv/bin/python -m bench.kafkacli [--events 20000] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner
from confluent_kafka import Producer

from bench.workload import events
from synapse.backends import kafkaadmin
from synapse.cli import main
from synapse.tansu import TansuBroker

TOPIC = "bench.cli"


def _fill(bootstrap: str, count: int) -> None:
    kafkaadmin.ensure_topics(bootstrap, [TOPIC], partitions=3)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for fields in events(count):
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        value = pairs.pop(b"data", None)
        headers: list[tuple[str, str | bytes | None]] = [(k.decode(), v) for k, v in pairs.items()]
        while True:
            try:
                producer.produce(TOPIC, value=value, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def _timed(url: str, *args: str) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["--url", url, *args], env={"SYNAPSE_CONFIG": "/nonexistent"})
    elapsed = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    return elapsed, json.loads(result.stdout)


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, TansuBroker(log_dir=Path(folder)) as broker:
        _fill(broker.bootstrap, args.events)
        times: dict[str, list[float]] = {"offsets": [], "exact": [], "replay": []}
        for rep in range(args.reps):
            t, info = _timed(broker.url, "streams", "info", TOPIC, "--json")
            times["offsets"].append(t)
            reported = info["length"]
            t, info = _timed(broker.url, "streams", "info", TOPIC, "--exact", "--json")
            times["exact"].append(t)
            assert info["length"] == args.events, info["length"]
            t, done = _timed(broker.url, "replay", TOPIC, "--to", f"bench.copy{rep}", "--json")
            times["replay"].append(t)
            assert done["copied"] == args.events
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.events} records, 3 partitions, tansu; medians of {args.reps}")
        print(f"streams info (end offsets): {med['offsets']:.2f} s (length reported {reported})")
        print(
            f"streams info --exact:       {med['exact']:.2f} s "
            f"({args.events / med['exact']:,.0f} records/s read; "
            f"{med['exact'] / med['offsets']:.1f}x the end-offset answer)"
        )
        rate = args.events / med["replay"]
        print(f"replay:                     {med['replay']:.2f} s ({rate:,.0f} records/s copied)")


if __name__ == "__main__":
    main_()
