"""--url / SYNAPSE_URL (with --redis-url / SYNAPSE_REDIS_URL as aliases), the refusal of
kafka:// by the CLI's connecting commands and Bus (not built for Kafka yet), the router's
checks of a Kafka URL and table, and `synapse check`'s topic-name rules."""

from __future__ import annotations

import json
import signal
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from synapse import routercli
from synapse.cli import main
from synapse.client import Bus
from synapse.config import load_table
from synapse.errors import ConfigError
from synapse.kafka.names import DEFAULT_DLQ
from synapse.tansu import TansuBroker
from tests.support.router import RouterProcess, router_args

KAFKA = "kafka://127.0.0.1:9"  # never contacted: refused before any connection

LEGAL = """\
version: 1
sources: [orders, "model.*"]
routes:
  - name: all
    match: "*"
    to: [orders.copy]
"""

ILLEGAL = """\
version: 1
router:
  dead_letter: "dead:letters"
  unrouted: "un routed"
sources:
  - orders
  - "model:*"
routes:
  - name: all
    match: "*"
    to:
      - ok.topic
      - "audit/all"
"""


def _cli(*args: str, **env: str | None) -> Result:
    environ: dict[str, str | None] = {
        "SYNAPSE_URL": None,
        "SYNAPSE_REDIS_URL": None,
        "SYNAPSE_DEBUG": None,
        "SYNAPSE_STATE_DIR": "/nonexistent/state",
    }
    environ.update(env)
    return CliRunner().invoke(main, list(args), env=environ, catch_exceptions=False)


def _table(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_kafka_table_defaults_its_dead_letter_to_synapse_dlq(tmp_path: Path) -> None:
    """On Kafka a table without router.dead_letter dead-letters to synapse.dlq; on Redis
    the same table keeps synapse:dlq."""
    path = _table(tmp_path, LEGAL)
    assert load_table(path, kind="kafka").settings.dead_letter == DEFAULT_DLQ
    assert load_table(path).settings.dead_letter == "synapse:dlq"


def test_kafka_table_names_every_illegal_topic_with_its_line(tmp_path: Path) -> None:
    """Source glob, destination, unrouted and dead letter: each illegal name is a problem
    at its own line; the legal ones are not mentioned."""
    path = _table(tmp_path, ILLEGAL)
    load_table(path)  # legal on Redis
    with pytest.raises(ConfigError) as raised:
        load_table(path, kind="kafka")
    found = {(p.line, p.message.split(":")[0]) for p in raised.value.problems}
    assert found == {
        (3, "router.dead_letter"),
        (4, "router.unrouted"),
        (7, "source"),
        (13, "route 'all'"),
    }
    assert all(p.file == str(path) for p in raised.value.problems)
    assert not any("ok.topic" in p.message for p in raised.value.problems)


def test_check_applies_topic_rules_only_for_a_kafka_url(tmp_path: Path) -> None:
    """`synapse check --url kafka://...` exits 1 listing file:line problems; with no URL the
    same table is fine; SYNAPSE_URL selects Kafka as the flag does."""
    path = str(_table(tmp_path, ILLEGAL))
    assert _cli("check", "--config", path).exit_code == 0
    refused = _cli("check", "--config", path, "--url", KAFKA)
    assert refused.exit_code == 1
    assert f"{path}:13: route 'all': 'audit/all' has characters" in refused.stderr
    by_env = _cli("check", "--config", path, "--json", SYNAPSE_URL=KAFKA)
    assert by_env.exit_code == 1
    assert {p["line"] for p in json.loads(by_env.stdout)["problems"]} == {3, 4, 7, 13}


RETAINED = """\
version: 1
sources: [orders]
routes:
  - name: all
    match: "*"
    to: [orders.copy]
retention:
  orders: {max_age: 7d}
  "orders.*": {maxlen: 1000, max_age: 1h}
"""


def test_check_on_kafka_warns_that_retention_rules_are_not_applied(tmp_path: Path) -> None:
    """`synapse check --url kafka://...`: each max_age and maxlen rule is a warning at its
    line saying Kafka does not apply it and naming the topic setting that does (retention.ms
    with the rule's age in ms); exit 0, 1 with --strict; on Redis the same table is clean."""
    path = str(_table(tmp_path, RETAINED))
    on_redis = _cli("check", "--config", path)
    assert on_redis.exit_code == 0 and "warning" not in on_redis.stderr
    warned = _cli("check", "--config", path, "--url", KAFKA)
    assert warned.exit_code == 0 and "ok with 3 warnings" in warned.stdout
    assert (
        f"{path}:8: warning: retention 'orders': max_age is not applied on Kafka (the router "
        "trims no topic by age): set the topics' retention.ms=604800000 instead"
    ) in warned.stderr
    assert f"{path}:9: warning: retention 'orders.*': max_age" in warned.stderr
    assert "retention.ms=3600000" in warned.stderr
    assert f"{path}:9: warning: retention 'orders.*': maxlen is not applied on Kafka" in (
        warned.stderr
    )
    strict = _cli("check", "--config", path, "--strict", "--json", "--url", KAFKA)
    assert strict.exit_code == 1
    found = json.loads(strict.stdout)["warnings"]
    assert [(w["line"], w["message"].split(":")[1].split()[0]) for w in found] == [
        (8, "max_age"),
        (9, "max_age"),
        (9, "maxlen"),
    ]


def test_router_on_kafka_warns_at_start_and_reload_that_retention_is_not_applied(
    broker: TansuBroker, topic: str, tmp_path: Path
) -> None:
    """synapse-router on a kafka:// URL with retention rules logs retention_not_applied (the
    max_age and maxlen globs, what applies instead) when it starts and again at a reload."""
    table = f"""\
        version: 1
        router: {{group: {topic}.g, block_ms: 100}}
        sources: ["{topic}.in"]
        routes:
          - name: all
            match: "*"
            to: ["{topic}.out"]
        retention:
          "{topic}.*": {{max_age: 7d}}
          "{topic}.out": {{maxlen: 1000}}
        """
    config = _table(tmp_path, table)
    args = [*router_args(config, None, consumer="r"), "--url", broker.url]
    router = RouterProcess(None, None, args=args, log_path=tmp_path / "router.log")
    try:
        router.start(wait_ready=True)
        warned = router.wait_log("retention_not_applied")
        assert (warned["max_age"], warned["maxlen"]) == ([f"{topic}.*"], [f"{topic}.out"])
        assert warned["level"] == "warning" and "retention.ms" in warned["instead"]
        router.signal(signal.SIGHUP)
        router.wait_log("config_reloaded")
        router.wait_log("retention_not_applied", count=2)
        assert router.stop() == 0
    finally:
        router.kill()


def test_check_with_a_malformed_kafka_url_is_a_usage_error(tmp_path: Path) -> None:
    """A kafka:// URL with a path is refused with exit 2 before the table is read."""
    result = _cli("check", "--config", str(_table(tmp_path, LEGAL)), "--url", "kafka://h:1/x")
    assert result.exit_code == 2 and "no path, query" in result.stderr


@pytest.mark.parametrize("flag", ["--url", "--redis-url"])
def test_services_says_what_is_wrong_with_a_malformed_kafka_url(flag: str) -> None:
    """Every command takes kafka:// now (services and topology too: tests/kafka/
    test_client_registry.py); a malformed one is exit 2 naming the problem (either flag)."""
    result = _cli("services", flag, "kafka://h:1/x")
    assert result.exit_code == 2
    assert "no path, query" in result.stderr


def test_cli_url_flag_and_env_reach_redis(url: str) -> None:
    """--url and SYNAPSE_URL name the Redis server as --redis-url always did."""
    assert _cli("streams", "--url", url).exit_code == 0
    assert _cli("streams", SYNAPSE_URL=url).exit_code == 0
    assert _cli("--url", url, "streams").exit_code == 0


def test_synapse_url_wins_over_its_alias(url: str) -> None:
    """With both set, SYNAPSE_URL is used (SYNAPSE_REDIS_URL is the alias)."""
    result = _cli("streams", SYNAPSE_URL=url, SYNAPSE_REDIS_URL="redis://127.0.0.1:1/0")
    assert result.exit_code == 0


def test_router_says_what_is_wrong_with_a_malformed_kafka_url(tmp_path: Path) -> None:
    """A malformed kafka:// URL exits 2 naming the problem."""
    result = CliRunner().invoke(
        routercli.main, ["--config", str(_table(tmp_path, LEGAL)), "--url", "kafka://"]
    )
    assert result.exit_code == 2 and "names no broker" in result.output
    assert "backend_unavailable" in result.output


def test_router_loads_the_table_for_kafka(tmp_path: Path) -> None:
    """On a kafka:// URL the router refuses a table with an illegal topic name (the config
    error's exit code), before contacting a broker."""
    result = CliRunner().invoke(
        routercli.main, ["--config", str(_table(tmp_path, ILLEGAL)), "--url", KAFKA]
    )
    assert result.exit_code == routercli.EXIT_CONFIG and "config_invalid" in result.output
    assert "'audit/all' has characters" in result.output


def test_bus_takes_a_kafka_url() -> None:
    """synapse.client.Bus takes kafka:// (no I/O before first use), dead-lettering to
    synapse.dlq by default (synapse:dlq is no legal topic)."""
    bus = Bus("svc", url=KAFKA)
    assert bus.kind == "kafka" and bus.dead_letter == "synapse.dlq"
