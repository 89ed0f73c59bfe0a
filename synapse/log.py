"""structlog set-up: JSON lines off a TTY, colourless console lines on one.

Event names are stable identifiers (``config_reloaded``, ``redis_unavailable``);
fields are key-value pairs. Nothing on the per-event hot path logs at INFO.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, cast

import structlog
from structlog.typing import FilteringBoundLogger


def configure(fmt: str | None = None, level: str = "info") -> None:
    """Configure structlog for the process; ``fmt`` is json, console or None (auto)."""
    if fmt is None:
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


#: What ``get`` returns: structlog's filtering bound logger (``bind`` returns one too).
Logger = FilteringBoundLogger


def get(name: str = "synapse") -> Logger:
    """The logger named ``name`` (configured by ``configure``, structlog's defaults before)."""
    return cast(Logger, structlog.get_logger(name))
