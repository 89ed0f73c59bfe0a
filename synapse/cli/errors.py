"""How a command fails: exit codes, ``Failure``, and the group that prints one line per error.

Errors are one line on stderr; ``--debug`` (or ``SYNAPSE_DEBUG``) shows the traceback
instead. Exit codes: 0 ok, 1 findings or failure, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from typing import Any, ClassVar

import click
import redis
from redis.exceptions import MovedError, RedisClusterException, RedisError

from synapse import settings
from synapse.errors import EXIT_FAILED, SynapseError

EXIT_OK = 0
EXIT_INTERRUPTED = 130


class Failure(SynapseError):
    """A command that ran and found a problem (exit 1)."""

    exit_code: ClassVar[int] = EXIT_FAILED


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
    kafka: Any = sys.modules.get("confluent_kafka")  # imported only for a kafka:// URL
    if kafka is not None and isinstance(exc, kafka.KafkaException):
        error = exc.args[0] if exc.args else None
        said = error.str() if isinstance(error, kafka.KafkaError) else text
        return f"Kafka{where}: {said}"
    if isinstance(exc, SynapseError | OSError):
        return text
    return f"{type(exc).__name__}: {text} (run with --debug for the traceback)"
