"""Where the store is: ``--url`` / ``SYNAPSE_URL`` (``--redis-url`` / ``SYNAPSE_REDIS_URL``
are aliases), else the URL the router wrote to ``<state-dir>/redis.url`` (``--state-dir`` /
``SYNAPSE_STATE_DIR`` / ``$STATE_DIRECTORY`` / ``./.synapse``).

``store_url`` gives any backend's URL (the commands built on ``cli/store.py`` take
``kafka://``); ``redis_url`` / ``connect`` are for the commands that speak Redis only, and
refuse a ``kafka://`` URL (exit 2) until they are built for Kafka (docs/kafka.md).
"""

from __future__ import annotations

import os

import click

from synapse import settings, wire
from synapse.errors import UsageError
from synapse.kafka.url import KAFKA_NOT_YET, backend_kind
from synapse.kafka.url import parse as parse_kafka

#: A sync client: one server, or Redis Cluster for a ``redis+cluster://`` URL.
Client = wire.SyncClient


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


def store_url() -> str:
    """The store's URL (Redis or Kafka; a malformed ``kafka://`` URL says what is wrong), or
    a UsageError saying what to do when there is none."""
    url = resolved_url()
    if url and backend_kind(url) == "kafka":
        parse_kafka(url)
    if url:
        return url
    meta = click.get_current_context().meta
    state = settings.state_dir(meta.get("synapse.state_dir") or os.environ.get("SYNAPSE_STATE_DIR"))
    raise UsageError(
        f"no Redis URL: pass --url or set SYNAPSE_URL, or start the router "
        f"(bin/run) so that {state / settings.URL_FILE} exists"
    )


def redis_url() -> str:
    """The Redis URL to use, by flag > env > state file; a UsageError saying what to do
    when none, or when it is a ``kafka://`` URL (for the commands not built for Kafka)."""
    url = store_url()
    if backend_kind(url) == "kafka":
        raise UsageError(KAFKA_NOT_YET)
    return url


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
