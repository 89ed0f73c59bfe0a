"""``synapse-router``: the command line. Settings (flag > ``SYNAPSE_*`` environment >
file > default), the table loaded before anything starts, the trial run's embedded
server when no URL is given, then the Daemon (daemon.py) on uvloop; exit codes from
errors.py (78 for a bad table, 75 for a busy name or state folder, 2 for usage).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from synapse import __version__, gctune, launch, settings, trialserver
from synapse import log as logging
from synapse.config import DEFAULT_CONFIG, load_table
from synapse.daemon import Daemon
from synapse.embedded import EmbeddedServer
from synapse.errors import ConfigError, SynapseError, UsageError
from synapse.kafka.url import backend_kind
from synapse.kafka.url import parse as parse_kafka
from synapse.statelock import StateLock

EXIT_CONFIG = ConfigError.exit_code  # systemd's RestartPreventExitStatus= names it


def _run_loop(coro: Any) -> int:
    gctune.tune()  # batches allocate much and briefly: collect less often (gctune.py)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result: int = runner.run(coro)
        return result


def _host_port(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Check HOST:PORT at the command line, so a typo is a usage error, not a traceback."""
    try:
        settings.host_port(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="SYNAPSE_CONFIG",
    default=DEFAULT_CONFIG,
    show_default=True,
    help="The routing table.",
)
@click.option(
    "--url",
    "--redis-url",
    "url",
    envvar=["SYNAPSE_URL", "SYNAPSE_REDIS_URL"],
    help="redis://, rediss://, unix://, redis+cluster:// or kafka:// URL; none starts the embedded "
    "server (env SYNAPSE_URL; --redis-url and SYNAPSE_REDIS_URL are aliases).",
)
@click.option(
    "--metrics-addr",
    envvar="SYNAPSE_METRICS_ADDR",
    default="127.0.0.1:9464",
    show_default=True,
    callback=_host_port,
    help="HOST:PORT of /metrics, /healthz, /readyz.",
)
@click.option(
    "--log-format",
    envvar="SYNAPSE_LOG_FORMAT",
    type=click.Choice(["json", "console"]),
    help="Default: console on a TTY, else JSON.",
)
@click.option(
    "--log-level",
    envvar="SYNAPSE_LOG_LEVEL",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--state-dir",
    envvar="SYNAPSE_STATE_DIR",
    help="Embedded server data; default $STATE_DIRECTORY, else ./.synapse",
)
@click.option(
    "--consumer", envvar="SYNAPSE_CONSUMER", help="Consumer name in the group (default host:pid)."
)
@click.version_option(__version__, prog_name="synapse-router")
def main(
    config_path: Path,
    url: str | None,
    metrics_addr: str,
    log_format: str | None,
    log_level: str,
    state_dir: str | None,
    consumer: str | None,
) -> None:
    """Route events from Redis Streams or Kafka topics by a YAML table."""
    launch.install_early_hup()  # already done by the console script; here for direct calls
    logging.configure(log_format, log_level)
    log = logging.get("synapse.daemon")
    source = click.get_current_context().get_parameter_source("url")
    if url and source is ParameterSource.COMMANDLINE and settings.has_password(url):
        log.warning("redis_password_on_command_line", hint=settings.PASSWORD_HINT)
    kind = backend_kind(url) if url else "redis"
    if kind == "kafka":
        problem = _kafka_problem(url or "")
        if problem is not None:
            log.error("backend_unavailable", backend="kafka", error=problem)
            sys.exit(UsageError.exit_code)
    try:
        table = load_table(config_path, kind=kind)
    except ConfigError as exc:
        log.error("config_invalid", config=str(config_path), errors=[str(p) for p in exc.problems])
        sys.exit(exc.exit_code)
    except Exception as exc:  # a table no check foresaw: still no restart loop, no traceback
        log.error("config_invalid", config=str(config_path), errors=[repr(exc)])
        sys.exit(EXIT_CONFIG)
    embedded: EmbeddedServer | None = None
    state = settings.state_dir(state_dir)
    lock = StateLock(state)
    try:
        if not url:
            lock.acquire()  # before anything in the folder is read, stopped or written
            embedded = trialserver.start(state, log)
            url = embedded.url
        daemon = Daemon(
            config_path,
            url,
            metrics_addr,
            consumer=consumer,
            password=settings.password(),
            table=table,
        )
        code = _run_loop(daemon.run())
    except SynapseError as exc:
        log.error("router_failed", error=str(exc))
        code = exc.exit_code
    finally:
        if embedded is not None:
            trialserver.stop(state, embedded, log)
        lock.release()
    sys.exit(code)


def _kafka_problem(url: str) -> str | None:
    """Why the router cannot run on the Kafka ``url`` (malformed, or the ``kafka`` extra
    not installed), or None."""
    try:
        parse_kafka(url)
    except UsageError as exc:
        return str(exc)
    if importlib.util.find_spec("confluent_kafka") is None:
        return "the Kafka backend needs confluent-kafka: pip install 'synapse-router[kafka]'"
    return None
