"""synapse-router: lifecycle. Start, signals, reload swap, drain, stop.

Signal handlers only flip state; the main coroutine acts. SIGTERM/SIGINT stop
reading, finish and commit the batch in hand, and exit 0 (a second one exits at
once). SIGHUP asks for a reload: the whole new table is read, checked and
compiled on the side (in a thread), then swapped in between batches; a bad one
changes nothing. A storm of SIGHUPs coalesces into as few reloads as needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from synapse import __version__, gctune, launch, settings
from synapse import log as logging
from synapse.config import DEFAULT_CONFIG, RoutingTable, diff, load_table
from synapse.consumer import Router
from synapse.embedded import EmbeddedServer
from synapse.errors import ConfigError, SynapseError, UsageError
from synapse.files import read_small_text
from synapse.kafka.url import backend_kind
from synapse.kafka.url import parse as parse_kafka
from synapse.metrics import Metrics
from synapse.notify import Notifier
from synapse.port import MetricsServer
from synapse.registry import ServiceInfo
from synapse.statelock import StateLock

EXIT_CONFIG = ConfigError.exit_code  # systemd's RestartPreventExitStatus= names it


class Daemon:
    def __init__(
        self,
        config: Path,
        url: str,
        metrics_addr: str,
        *,
        consumer: str | None,
        password: str | None,
        table: RoutingTable,
    ) -> None:
        self.config = config
        self.url = url
        self.metrics_addr = metrics_addr
        self.table = table
        self.metrics = Metrics()
        self.notifier = Notifier()
        self.log = logging.get("synapse.daemon")
        self.router = Router(
            table,
            url,
            self.metrics,
            consumer=consumer,
            password=password,
            on_progress=self.notifier.progress,
        )
        self.reload_requested = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self._signals = 0

    def _on_stop(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            self.log.warning("forced_exit", signal=signal.Signals(signum).name)
            os._exit(130)
        self.log.info("stop_requested", signal=signal.Signals(signum).name)
        self.notifier.stopping()
        self.stop_requested.set()
        self.router.stop()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        if launch.hup_pending():  # a SIGHUP during start-up: reload once running
            self.reload_requested.set()

        host, port = settings.host_port(self.metrics_addr)
        server = MetricsServer(self.metrics, lambda: self.router.ready)
        try:
            await server.start(host, port)
        except OSError as exc:
            self.log.error("metrics_port_unavailable", addr=self.metrics_addr, error=str(exc))
            return 1
        self.metrics.set_config(self.table.hash, time.time())
        self.metrics.reloads.labels("success")
        self.log.info(
            "router_starting",
            version=__version__,
            config=str(self.config),
            config_hash=self.table.hash,
            url=settings.redact(self.url),
            backend=self.router.backend.name,
            metrics=f"http://{settings.url_host(host)}:{server.port}/metrics",
            consumer=self.router.consumer,
        )
        self.notifier.status(f"connecting to {self.router.backend.name}")
        try:
            async with asyncio.TaskGroup() as tasks:
                routing = tasks.create_task(self.router.run())
                tasks.create_task(self._announce_ready(routing))
                tasks.create_task(self._reloader(routing))
                tasks.create_task(self._heartbeat(routing))
        finally:
            self.notifier.stopping()
            await self.router.close()
            await server.close()
        self.log.info("router_stopped", batches=self.router.batches)
        if self.router.failure is not None:
            return self.router.failure.exit_code  # e.g. consumer name in use by a live router
        return 0

    async def _announce_ready(self, routing: asyncio.Task[None]) -> None:
        while not routing.done():
            if self.router.ready:
                self.notifier.ready(f"routing {len(self.router.sources)} sources")
                return
            await asyncio.sleep(0.05)

    async def _reloader(self, routing: asyncio.Task[None]) -> None:
        while not routing.done():
            waiter = asyncio.ensure_future(self.reload_requested.wait())
            await asyncio.wait({waiter, routing}, return_when=asyncio.FIRST_COMPLETED)
            if routing.done():
                waiter.cancel()
                return
            self.reload_requested.clear()  # signals arriving during the load coalesce
            await self.reload()

    def service_info(self) -> ServiceInfo:
        """What this router tells the service registry (the config hash follows reloads)."""
        table = self.table
        return ServiceInfo(
            name="synapse-router",
            instance=self.router.consumer,
            kind="router",
            version=__version__,
            consumes=table.sources,
            produces=(*sorted(table.destinations), table.settings.dead_letter),
            config=table.hash,
        )

    async def _heartbeat(self, routing: asyncio.Task[None]) -> None:
        """Register in the service registry while routing runs (TTL heartbeat)."""
        beat = self.router.backend.presence(self.service_info)
        beating = asyncio.ensure_future(beat.run())
        await asyncio.wait({routing, beating}, return_when=asyncio.FIRST_COMPLETED)
        beat.stop()
        await beating

    async def reload(self) -> None:
        self.notifier.reloading()
        try:
            table = await asyncio.to_thread(load_table, self.config, kind=backend_kind(self.url))
        except Exception as exc:  # ConfigError, an unreadable file, a bug: never kill the router
            self.metrics.reloads.labels("failure").inc()
            self.metrics.last_reload_ok.set(0)
            errors = [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else [repr(exc)]
            self.log.error(
                "config_reload_failed",
                config=str(self.config),
                config_hash=self.table.hash,
                errors=errors,
            )
            self.notifier.reloaded(f"reload failed, old table kept: {'; '.join(errors)}")
            return
        changes = diff(self.table, table)
        self.table = table
        self.router.swap_table(table)
        self.metrics.reloads.labels("success").inc()
        self.metrics.last_reload_ok.set(1)
        self.metrics.set_config(table.hash, time.time())
        self.log.info("config_reloaded", config_hash=table.hash, **changes)
        self.notifier.reloaded(f"reloaded config {table.hash}; routing")


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
            embedded = _start_embedded(state, log)
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
            embedded.stop()
            with contextlib.suppress(OSError):
                (state / settings.URL_FILE).unlink()
            log.info("embedded_server_stopped")
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


def _start_embedded(state: Path, log: logging.Logger) -> EmbeddedServer:
    data = state / "data"
    pidfile = state / "server.pid"
    _stop_stale(pidfile, data, log)
    server = EmbeddedServer(data_dir=data, extra_args=("--pidfile", str(pidfile.resolve())))
    state.mkdir(parents=True, exist_ok=True)
    server.start()
    (state / settings.URL_FILE).write_text(server.url + "\n")
    log.info(
        "embedded_server_started",
        url=server.url,
        data=str(data),
        url_file=str(state / settings.URL_FILE),
        server=server.binary,
        allocator=server.allocator,
    )
    return server


def _stop_stale(pidfile: Path, data: Path, log: logging.Logger) -> None:
    """A server left behind by a router killed with SIGKILL would share our AOF: stop it.

    Only called with the state lock held (statelock.py), so no live router owns that
    server; and only a process whose working directory is our data folder (the server
    chdirs to its --dir) is ours: a reused pid is never signalled.
    """
    try:
        pid = int(read_small_text(pidfile))
    except (OSError, ValueError):
        return
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return
    if cwd != str(data.resolve()):
        return
    log.warning("stale_embedded_server", pid=pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
