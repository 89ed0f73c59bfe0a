"""The store seam on Redis (cli/store.py): what the commands showed before it, kept."""

from __future__ import annotations

import subprocess
import sys

import redis

from tests.cli.conftest import Invoke, as_json


def test_tail_shows_the_time_of_an_id_at_the_epoch(cli: Invoke, r: redis.Redis) -> None:
    """An entry id with 0 ms still shows its time (1970-01-01...), not an empty one."""
    r.xadd("s", {"type": "a.b", "data": "{}"}, id="0-1")
    [line, *_] = cli("tail", "s").stdout.splitlines()
    assert line == "0-1  1970-01-01T00:00:00.000Z  a.b"
    assert as_json(cli("tail", "s", "--json"))["time"] == "1970-01-01T00:00:00.000Z"


def test_publish_key_is_refused_on_redis(cli: Invoke, r: redis.Redis) -> None:
    """--key names a Kafka record's key: on Redis it is a usage error and nothing is written."""
    result = cli("publish", "ingress", "--no-validate", "--key", "k", "{}")
    assert result.exit_code == 2 and "--key is for Kafka" in result.stderr
    assert not r.exists("ingress")


def test_the_cli_loads_no_kafka_client_until_a_kafka_url() -> None:
    """confluent-kafka is the optional `kafka` extra: importing the CLI does not load it."""
    code = "import sys, synapse.cli.main; print('confluent_kafka' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert done.stdout.strip() == b"False"
