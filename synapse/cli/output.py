"""How commands print: JSON lines, aligned tables, plurals, audit lines, pacing."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import click
import structlog


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


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 dead letter``, ``2 dead letters`` (``nouns`` for an irregular plural)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


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
