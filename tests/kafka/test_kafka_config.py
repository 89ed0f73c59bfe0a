"""SYNAPSE_KAFKA_CONFIG: the operator's librdkafka properties (TLS, SASL, tuning) reach every
Kafka client Synapse makes; a bad file is refused with file:line before any client connects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synapse.backends import kafkaconfig
from synapse.errors import ConfigError
from synapse.tansu import TansuBroker
from tests.conftest import write_table
from tests.kafka.cli import kafka_cli
from tests.support.router import RouterProcess, router_args


def properties(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.properties"
    path.write_text(text)
    return path


def test_properties_are_read_with_comments_and_equals_in_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comments and blank lines skipped, a value keeps its own '=' (sasl.jaas.config-style);
    the operator's setting wins over Synapse's tuning but not over the bootstrap list."""
    path = properties(
        tmp_path,
        "# TLS and SASL\n\n! also a comment\nsecurity.protocol = SASL_SSL\n"
        "sasl.mechanism=PLAIN\nsasl.username=svc\nsasl.password=a=b=c\nlinger.ms=20\n",
    )
    monkeypatch.setenv(kafkaconfig.ENV, str(path))
    found = kafkaconfig.client_config("h:9092", {"linger.ms": 2, "client.id": "r"})
    assert found["bootstrap.servers"] == "h:9092" and found["client.id"] == "r"
    assert found["security.protocol"] == "SASL_SSL" and found["sasl.password"] == "a=b=c"
    assert found["linger.ms"] == "20"
    monkeypatch.delenv(kafkaconfig.ENV)
    assert kafkaconfig.client_config("h:9092", {"linger.ms": 2})["linger.ms"] == 2


def test_every_problem_of_the_file_is_reported_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line that is not key=value and a key Synapse's guarantees rest on (acks, group.id,
    enable.auto.commit...) are refused together, each with file:line."""
    path = properties(tmp_path, "linger.ms=5\nacks=1\njust words\nenable.auto.commit=true\n")
    monkeypatch.setenv(kafkaconfig.ENV, str(path))
    with pytest.raises(ConfigError) as caught:
        kafkaconfig.client_config("h:9092", {})
    shown = [str(p) for p in caught.value.problems]
    assert shown == [
        f"{path}:2: acks is Synapse's own (its delivery rests on it)",
        f"{path}:3: expected a librdkafka property: key=value",
        f"{path}:4: enable.auto.commit is Synapse's own (its delivery rests on it)",
    ]
    assert caught.value.exit_code == 78


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ("linger.ms=1\nsasl.mechanismz=PLAIN\n", 2, "No such configuration property"),
        ("security.protocol=bogus\n", 1, 'Invalid value "bogus"'),
    ],
)
def test_librdkafka_refusing_a_property_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, line: int, why: str
) -> None:
    """An unknown property or a refused value is a ConfigError naming the file and line,
    found without contacting any broker."""
    path = properties(tmp_path, text)
    monkeypatch.setenv(kafkaconfig.ENV, str(path))
    with pytest.raises(ConfigError, match=why) as caught:
        kafkaconfig.client_config("h:9092", {})
    assert caught.value.problems[0].line == line and caught.value.problems[0].file == str(path)


def test_a_missing_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SYNAPSE_KAFKA_CONFIG naming nothing readable is refused, not ignored."""
    monkeypatch.setenv(kafkaconfig.ENV, str(tmp_path / "nope.properties"))
    with pytest.raises(ConfigError, match="cannot read it"):
        kafkaconfig.client_config("h:9092", {})


def test_the_cli_producer_takes_the_operators_settings(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """`synapse publish` on Kafka runs with the file's settings: with message.max.bytes=1000
    a 2 kB event is refused by the client (exit 1); without the file it is written."""
    cli, _ = kafka_cli(broker, topic, tmp_path)
    body = json.dumps({"model_id": "m", "pad": "x" * 2000})
    small = properties(tmp_path, "message.max.bytes=1000\n")
    refused = cli("publish", topic, "--type", "model.ready", body, SYNAPSE_KAFKA_CONFIG=str(small))
    assert refused.exit_code == 1, refused.output
    assert "too large" in refused.stderr.lower(), refused.stderr
    written = cli("publish", topic, "--type", "model.ready", body, SYNAPSE_KAFKA_CONFIG=None)
    assert written.exit_code == 0, written.output


def test_router_with_a_bad_file_exits_78_naming_the_line(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """synapse-router on Kafka with a bad SYNAPSE_KAFKA_CONFIG exits 78 (systemd does not
    restart it) and its log names file:line; the file's values are never logged."""
    path = properties(tmp_path, "sasl.password=hunter2-secret\nacks=0\n")
    table = f'version: 1\nrouter: {{group: {topic}.g}}\nsources: ["{topic}"]\nroutes: []\n'
    config = write_table(tmp_path / "cfg", table)
    args = [*router_args(config, None, consumer="c"), "--url", broker.url]
    router = RouterProcess(
        None, None, args=args, log_path=tmp_path / "router.log", env={kafkaconfig.ENV: str(path)}
    )
    router.start()
    assert router.wait(60) == 78
    assert f"{path}:2: acks is Synapse's own" in router.text()
    assert "hunter2" not in router.text()


def test_every_kafka_client_is_configured_through_client_config() -> None:
    """No module builds a librdkafka config by hand: the operator's file reaches every
    client only if each one goes through kafkaconfig.client_config."""
    package = Path(kafkaconfig.__file__).parents[1]
    by_hand = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if '"bootstrap.servers"' in p.read_text() and p.name != "kafkaconfig.py"
    ]
    assert by_hand == []
