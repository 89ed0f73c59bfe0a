"""The options every ``synapse`` command shares: connection, ``--config``, ``--json``, ``--debug``.

Connection and debug options are stored in ``ctx.meta``, which every context of one
invocation shares, so they are accepted on the group and on each command
(``synapse --url U streams`` and ``synapse streams --url U`` both work).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from synapse.config import DEFAULT_CONFIG

F = TypeVar("F", bound=Callable[..., Any])


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
        help="redis://, rediss://, unix://, redis+cluster:// or kafka:// URL (env SYNAPSE_URL; "
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
