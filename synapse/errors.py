"""One exception tree, sorted by what happens next.

- ``ConfigError``: refuse to start, or refuse a reload (the old table keeps routing).
- ``InvalidEvent``: the entry is dead-lettered now; retrying cannot fix it.
- ``TransientError``: back off and retry; the entry stays pending.
- ``UsageError``: the CLI was called wrongly (exit 2).

Every error carries the exit code a command line should end with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

#: Dead-letter reason codes (DESIGN.md). Anything written to synapse-reason is one of these.
REASONS: tuple[str, ...] = (
    "invalid_json",
    "invalid_encoding",
    "missing_type",
    "schema_violation",
    "unknown_schema",
    "no_route",
    "too_large",
    "too_deep",
    "max_deliveries",
    "destination_error",
    "handler_error",  # a subscriber's handler raised max_deliveries times (synapse.client)
)


class SynapseError(Exception):
    """Root of every error Synapse raises on purpose."""

    exit_code: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config or schema file, located to a line."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class ConfigError(SynapseError):
    """The routing table or a schema is unusable; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))

    @classmethod
    def single(cls, file: str, line: int | None, message: str) -> ConfigError:
        return cls([Problem(file, line, message)])


class InvalidEvent(SynapseError):
    """An event that can never be routed: dead-letter it on its first delivery."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class TransientError(SynapseError):
    """Redis unreachable, a destination refusing writes: may pass later."""


class Outage(TransientError):
    """The server refuses writes as a whole (OOM, READONLY, LOADING...): back off, not ready."""


class ConsumerInUse(SynapseError):
    """Another live router holds this consumer name in the group: refuse to start."""

    exit_code: ClassVar[int] = 75  # sysexits EX_TEMPFAIL: retry once the other lease expires


class UsageError(SynapseError):
    """Bad command-line input."""

    exit_code: ClassVar[int] = 2
