"""``synapse-gateway``: flags and environment to ``GatewaySettings``, then serve.

The store (Redis, or Kafka for a ``kafka://`` URL) is found like the router and
the CLI find it: ``--url`` (or ``--redis-url``), else ``SYNAPSE_URL`` /
``SYNAPSE_REDIS_URL``, else the URL ``bin/run`` wrote to ``<state-dir>/redis.url``.
The token comes from ``--token-file`` or a systemd credential named
``gateway-token``. SIGTERM and SIGINT end every client's stream (browsers
reconnect elsewhere) and exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from synapse import __version__, log, settings
from synapse.errors import UsageError
from synapse.gateway.access import Cors, StreamPolicy, read_token
from synapse.gateway.app import Gateway
from synapse.gateway.redisconn import check_url
from synapse.gateway.settings import GatewaySettings, parse_listen, resolve_url, token_path
from synapse.notify import Notifier

logger = log.get("synapse.gateway")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--listen",
    envvar="SYNAPSE_GATEWAY_LISTEN",
    default="127.0.0.1:8088",
    show_default=True,
    help="HOST:PORT to serve on.",
)
@click.option(
    "--url",
    "--redis-url",
    "url",
    help="redis://... or kafka://host:port (env SYNAPSE_URL, SYNAPSE_REDIS_URL).",
)
@click.option("--state-dir", help="Where bin/run's redis.url is (default ./.synapse).")
@click.option(
    "--streams",
    envvar="SYNAPSE_GATEWAY_STREAMS",
    help="Stream (topic) globs served, comma-separated (default: all but internal ones).",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    envvar="SYNAPSE_GATEWAY_TOKEN_FILE",
    help="Require this token on /events and / (Bearer header or ?token=).",
)
@click.option(
    "--allow-origin",
    multiple=True,
    envvar="SYNAPSE_GATEWAY_ALLOW_ORIGIN",
    help="Origin allowed by CORS (repeat; * for any).",
)
@click.option(
    "--max-clients",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    envvar="SYNAPSE_GATEWAY_MAX_CLIENTS",
)
@click.option(
    "--client-buffer-kib",
    type=click.IntRange(1),
    default=1024,
    show_default=True,
    help="Per-client buffer; a client this far behind is disconnected.",
)
@click.option("--keepalive-s", type=click.FloatRange(0.05), default=15.0, hidden=True)
@click.option("--log-format", type=click.Choice(["json", "console"]), envvar="SYNAPSE_LOG_FORMAT")
@click.option("--log-level", default="info", envvar="SYNAPSE_LOG_LEVEL", show_default=True)
@click.version_option(__version__, prog_name="synapse-gateway")
def command(
    listen: str,
    url: str | None,
    state_dir: str | None,
    streams: str | None,
    token_file: Path | None,
    allow_origin: tuple[str, ...],
    max_clients: int,
    client_buffer_kib: int,
    keepalive_s: float,
    log_format: str | None,
    log_level: str,
) -> None:
    """Serve Synapse streams to browsers as Server-Sent Events, with a live page at /."""
    log.configure(log_format, log_level)
    try:
        resolved = resolve_url(url, state_dir)
        check_url(resolved)
        host, port = parse_listen(listen)
        path = token_path(token_file)
        token = read_token(path) if path is not None else None
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    origins = [o for value in allow_origin for o in value.replace(",", " ").split()]
    config = GatewaySettings(
        url=resolved,
        host=host,
        port=port,
        policy=StreamPolicy.parse(streams),
        token=token,
        cors=Cors.of(origins),
        max_clients=max_clients,
        client_buffer_bytes=client_buffer_kib * 1024,
        keepalive_s=keepalive_s,
    )
    sys.exit(run(config))


def run(config: GatewaySettings) -> int:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(serve(config))


async def serve(config: GatewaySettings) -> int:
    gateway = Gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await gateway.start()
    except OSError as exc:
        logger.error("gateway_listen_failed", listen=f"{config.host}:{config.port}", error=str(exc))
        await gateway.hub.close()
        return 1
    logger.info(
        "gateway_started",
        listen=f"{config.host}:{gateway.port}",
        redis=settings.redact(config.url),
        store=gateway.store,
        streams=gateway.policy.describe(),
        token=config.token is not None,
        allow_origin=sorted(config.cors.origins),
        max_clients=config.max_clients,
    )
    notifier = Notifier()
    notifier.ready(f"serving on {config.host}:{gateway.port}")
    await stop.wait()
    notifier.stopping()
    logger.info("gateway_stopping", clients=gateway.hub.subscribers)
    await gateway.stop()
    logger.info("gateway_stopped")
    return 0


def main() -> None:
    command()
