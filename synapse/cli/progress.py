"""Progress of long operations: a bar on a TTY, nothing else (the caller prints a summary)."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

import click


class Progress:
    """``click.progressbar`` when stderr is a terminal and output is not JSON; else silent."""

    def __init__(self, label: str, as_json: bool, total: int | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.shown = not as_json and sys.stderr.isatty()
        self._bar: Any = None

    def __enter__(self) -> Progress:
        if self.shown and self.total is not None:
            self._bar = click.progressbar(length=self.total, label=self.label, file=sys.stderr)
            self._bar.__enter__()
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.shown:
            click.echo(f"\r{self.label}: {self.done}", nl=False, err=True)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)
        elif self.shown and self.done:
            click.echo("", err=True)
