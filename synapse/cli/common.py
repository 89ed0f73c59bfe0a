"""What every ``synapse`` command shares: where the store is, output, errors, times.

The store is found by ``--url`` / ``SYNAPSE_URL`` (``--redis-url`` /
``SYNAPSE_REDIS_URL`` are aliases), else by the URL the router wrote to
``<state-dir>/redis.url`` (``--state-dir`` / ``SYNAPSE_STATE_DIR`` /
``$STATE_DIRECTORY`` / ``./.synapse``). The options are accepted on the group and
on each command (``synapse --url U streams`` and ``synapse streams --url U`` both
work). A ``kafka://`` URL is refused by the commands that connect until the Kafka
backend is complete (docs/kafka.md); ``check`` applies Kafka's topic-name rules for
it. Errors are one line on stderr; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import click
import redis
import structlog
from redis.exceptions import MovedError, RedisClusterException, RedisError

from synapse import settings, wire
from synapse.config import DEFAULT_CONFIG, RoutingTable, load_table
from synapse.errors import EXIT_FAILED as EXIT_FAILED
from synapse.errors import ConfigError, SynapseError, UsageError
from synapse.kafka.url import KAFKA_NOT_YET, backend_kind
from synapse.kafka.url import parse as parse_kafka

F = TypeVar("F", bound=Callable[..., Any])

#: A sync client: one server, or Redis Cluster for a ``redis+cluster://`` URL.
Client = wire.SyncClient

EXIT_OK = 0
EXIT_INTERRUPTED = 130


class Failure(SynapseError):
    """A command that ran and found a problem (exit 1)."""

    exit_code: ClassVar[int] = EXIT_FAILED


# -- shared options: stored in ctx.meta, which every context of one invocation shares --


def _store(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            ctx.meta[f"synapse.{key}"] = value

    return callback


def connection_options(func: F) -> F:
    """``--url`` (alias ``--redis-url``) and ``--state-dir`` on a command (also accepted
    on the group)."""
    func = click.option(
        "--state-dir",
        expose_value=False,
        callback=_store("state_dir"),
        help="Where the router's redis.url is (default $STATE_DIRECTORY, else ./.synapse).",
    )(func)
    func = click.option(
        "--url",
        "--redis-url",
        "url",
        expose_value=False,
        callback=_store("url"),
        help="redis://, rediss://, unix:// or redis+cluster:// URL (env SYNAPSE_URL; "
        "--redis-url and SYNAPSE_REDIS_URL are aliases).",
    )(func)
    return func


def debug_option(func: F) -> F:
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        callback=_store("debug"),
        help="Show tracebacks.",
    )(func)


def config_option(func: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path),
        envvar="SYNAPSE_CONFIG",
        default=DEFAULT_CONFIG,
        show_default=True,
        help="The routing table.",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(func)


def env_url() -> str | None:
    """``SYNAPSE_URL``, else its alias ``SYNAPSE_REDIS_URL``, else None."""
    return os.environ.get("SYNAPSE_URL") or os.environ.get("SYNAPSE_REDIS_URL") or None


def resolved_url() -> str | None:
    """The URL by flag > env > state file, or None when none is given."""
    meta = click.get_current_context().meta
    flag = meta.get("synapse.url")
    if flag and settings.has_password(flag) and not meta.get("synapse.password_warned"):
        meta["synapse.password_warned"] = True
        click.echo(f"synapse: warning: {settings.PASSWORD_HINT}", err=True)
    url = flag or env_url()
    if url:
        return str(url)
    state = settings.state_dir(meta.get("synapse.state_dir") or os.environ.get("SYNAPSE_STATE_DIR"))
    return settings.url_from_state(state)


def redis_url() -> str:
    """The Redis URL to use, by flag > env > state file; a UsageError saying what to do
    when none, or when it is a ``kafka://`` URL (no command connects to Kafka yet)."""
    url = resolved_url()
    if url and backend_kind(url) == "kafka":
        parse_kafka(url)  # a malformed URL says what is wrong with it first
        raise UsageError(KAFKA_NOT_YET)
    if url:
        return url
    meta = click.get_current_context().meta
    state = settings.state_dir(meta.get("synapse.state_dir") or os.environ.get("SYNAPSE_STATE_DIR"))
    raise UsageError(
        f"no Redis URL: pass --url or set SYNAPSE_URL, or start the router "
        f"(bin/run) so that {state / settings.URL_FILE} exists"
    )


def connect() -> Client:
    """A sync client on the resolved URL (password from SYNAPSE_REDIS_PASSWORD).

    ``redis+cluster://`` / ``rediss+cluster://`` give a Redis Cluster client seeded
    by that node; stream reads come back flat either way (``wire.connect_sync``).
    """
    url = redis_url()
    ctx = click.get_current_context()
    ctx.meta["synapse.resolved_url"] = url
    client = wire.connect_sync(url, read_timeout_s=30, password=settings.password())
    ctx.call_on_close(client.close)
    return client


def call(client: Client, *args: Any) -> Any:
    """One raw command (entries come back flat, see connect)."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


Entry = tuple[bytes, list[bytes]]


def xrange(client: Client, stream: str, start: str, end: str, count: int) -> list[Entry]:
    reply = call(client, "XRANGE", stream, start, end, "COUNT", count)
    return [(e[0], list(e[1] or [])) for e in reply]


def scan_range(
    client: Client, stream: str, start: str = "-", end: str = "+", page: int = 500
) -> Iterator[Entry]:
    """Every entry of ``stream`` from ``start`` to ``end`` (inclusive), page by page."""
    while True:
        batch = xrange(client, stream, start, end, page)
        yield from batch
        if len(batch) < page:
            return
        start = next_id(batch[-1][0])


#: Counts the entries of KEYS[1] from ARGV[1] to ARGV[2] (inclusive), at most ARGV[3] of
#: them per call; returns {count, next start or ""} so a long range is counted in slices.
COUNT_LUA = """
local n, start, stop, cap = 0, ARGV[1], ARGV[2], tonumber(ARGV[3])
while n < cap do
  local page = redis.call('XRANGE', KEYS[1], start, stop, 'COUNT', 1000)
  n = n + #page
  if #page < 1000 then return {n, ''} end
  start = '(' .. page[#page][1]
end
return {n, start}
"""


def count_range(client: Client, stream: str, start: str = "-", end: str = "+") -> int:
    """How many entries ``stream`` holds from ``start`` to ``end`` (inclusive), counted on the
    server in slices of 20k (no entry crosses the network; a slice blocks Redis ~ms)."""
    script = client.register_script(COUNT_LUA)
    total, at = 0, start
    while at:
        n, at_raw = script(keys=[stream], args=[at, end, 20_000])
        total += int(n)
        at = text(at_raw)
    return total


def last_id(client: Client, stream: str) -> str | None:
    reply = call(client, "XREVRANGE", stream, "+", "-", "COUNT", 1)
    return text(reply[0][0]) if reply else None


def table(config_path: Path) -> RoutingTable:
    """The routing table, or a Failure naming the first problems."""
    try:
        return load_table(config_path)
    except ConfigError as exc:
        first = "; ".join(str(p) for p in exc.problems[:3])
        more = (
            f" (+{len(exc.problems) - 3} more; run synapse check)" if len(exc.problems) > 3 else ""
        )
        raise Failure(f"bad config: {first}{more}") from exc


def table_or_none(config_path: Path) -> RoutingTable | None:
    """The table when the file exists (a broken one is an error); None when absent."""
    if not config_path.exists():
        return None
    return table(config_path)


# -- errors --------------------------------------------------------------------------------


class SynapseGroup(click.Group):
    """A group that turns errors into one readable line (a traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("synapse: interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if ctx.meta.get("synapse.debug") or os.environ.get("SYNAPSE_DEBUG"):
                raise
            click.echo(f"synapse: error: {describe(exc, ctx)}", err=True)
            code = exc.exit_code if isinstance(exc, SynapseError) else EXIT_FAILED
            raise click.exceptions.Exit(code) from None


def describe(exc: BaseException, ctx: click.Context) -> str:
    """One line for an error; never the password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    url = ctx.meta.get("synapse.resolved_url")
    where = f" at {settings.redact(url)}" if url else ""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return f"cannot reach Redis{where}: {text}"
    if isinstance(exc, MovedError):
        return f"Redis said: MOVED {text}: a cluster node; use redis+cluster://host:port"
    if isinstance(exc, redis.AuthenticationError | redis.ResponseError | RedisError):
        return f"Redis said: {text}"
    if isinstance(exc, RedisClusterException):  # no node reachable, not a cluster...
        return f"Redis Cluster{where}: {text}"
    if isinstance(exc, SynapseError | OSError):
        return text
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"


# -- output ------------------------------------------------------------------------------


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=None, default=str, ensure_ascii=False))


def text(value: bytes | str | None) -> str:
    if isinstance(value, str):
        return value
    return "" if value is None else value.decode("utf-8", "replace")


def table_rows(rows: list[list[str]], header: list[str]) -> Iterator[str]:
    """Left-aligned columns, header first."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in [header, *rows]:
        yield "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()


def audit(event: str, **fields: Any) -> None:
    """Log what an operation did as one structured line on stderr (JSON off a TTY, console
    on one), with a stable event name: ``replay_done``, ``dlq_redriven``, ``dlq_purged``.
    The logger is built per call on the current stderr (no global logging set-up)."""
    stream = sys.stderr
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False)
        if stream.isatty()
        else structlog.processors.JSONRenderer()
    )
    logger = structlog.wrap_logger(
        structlog.PrintLogger(stream),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
    )
    logger.info(event, **fields)


def interactive() -> bool:
    return sys.stdout.isatty()


class Pacer:
    """Holds a loop to ``rate`` items per second (None: no limit)."""

    def __init__(self, rate: float | None) -> None:
        self.interval_s = 1.0 / rate if rate else 0.0
        self.started = time.monotonic()
        self.done = 0

    def wait(self, items: int = 1) -> None:
        self.done += items
        if not self.interval_s:
            return
        delay = self.started + self.done * self.interval_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)


# -- times and ids -----------------------------------------------------------------------

_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_ID = re.compile(r"^\d+(-\d+)?$")


def parse_when(value: str, now_ms: int | None = None) -> str:
    """A stream id bound from ``-2h`` / ``30m`` (ago), ISO 8601, an entry id, or ms."""
    value = value.strip()
    if _ID.match(value):
        return value
    rel = _RELATIVE.match(value)
    if rel:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return str(max(0, now - int(float(rel.group(1)) * _UNITS_MS[rel.group(2)])))
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"cannot read time {value!r}: use ISO 8601 (2024-05-01T12:00:00Z), "
            "relative (-2h, -30m, -7d) or an entry id (1714564800000-0)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return str(int(stamp.timestamp() * 1000))


def entry_id(value: str) -> str:
    """``value`` when it is a stream entry id (``ms`` or ``ms-seq``), else a usage error."""
    if not _ID.match(value.strip()):
        raise UsageError(
            f"not an entry id: {value!r} (expected milliseconds-sequence, e.g. 1714564800000-0)"
        )
    return value.strip()


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 dead letter``, ``2 dead letters`` (``nouns`` for an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def id_time(entry_id: bytes | str | None) -> str:
    """The ISO time of an entry id, or '' for none."""
    if not entry_id:
        return ""
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms = int(raw.split("-", 1)[0])
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def id_key(entry_id: bytes | str) -> tuple[int, int]:
    raw = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: bytes | str) -> str:
    """The smallest id after ``entry_id`` (for exclusive ranges)."""
    ms, seq = id_key(entry_id)
    return f"{ms}-{seq + 1}"
