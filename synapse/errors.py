"""One exception tree, sorted by what happens next, and the names of what went wrong.

- ``ConfigError``: refuse to start (exit 78), or refuse a reload (the old table keeps routing).
- ``InvalidEvent``: the entry is dead-lettered now with a ``Reason``; retrying cannot fix it.
- ``Outage``: the server refuses writes as a whole: back off, not ready; the entry stays pending.
- ``ConsumerInUse`` / ``AlreadyRunning`` (statelock.py): another process owns it (exit 75).
- ``UsageError``: the CLI was called wrongly (exit 2).

Every error carries the exit code a process should end with (``exit_code``); the
daemon and the CLI read it from the class. A server's error text is named by
``classify_reply`` (pure, here); an exception by ``failures.classify`` (which knows
redis-py's classes). The contract these names belong to is README.md and
docs/guarantees.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 75  # sysexits EX_TEMPFAIL: may work once the other process stops
EXIT_CONFIG = 78  # sysexits EX_CONFIG: systemd's RestartPreventExitStatus= names it


class Reason(StrEnum):
    """Dead-letter reason codes: anything written to synapse-reason is one of these."""

    INVALID_JSON = "invalid_json"
    INVALID_ENCODING = "invalid_encoding"
    MISSING_TYPE = "missing_type"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_SCHEMA = "unknown_schema"
    NO_ROUTE = "no_route"
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    MAX_DELIVERIES = "max_deliveries"
    DESTINATION_ERROR = "destination_error"
    HANDLER_ERROR = "handler_error"  # a subscriber's handler raised max_deliveries times (client)


#: Every reason, as plain strings (what a dead letter or a route test names).
REASONS: tuple[str, ...] = tuple(r.value for r in Reason)


class Failure(StrEnum):
    """What kind of failure a Redis error or an exception is; also the ``kind`` label of
    ``synapse_redis_errors_total``."""

    CONNECTION = "connection"  # socket lost, timeout, no cluster node reachable
    OUTAGE = "outage"  # the server refuses writes as a whole (OOM, READONLY, LOADING...)
    NO_GROUP = "nogroup"  # the consumer group is gone (stream deleted or group destroyed)
    GROUP_EXISTS = "busygroup"  # XGROUP CREATE of a group that exists: success
    NO_KEY = "nokey"  # XGROUP CREATE without MKSTREAM on a stream deleted since the scan
    NO_SCRIPT = "noscript"  # EVALSHA of a script the server does not hold: EVAL it
    NO_PERMISSION = "noperm"  # the ACL refuses a command or a key
    RESPONSE = "response"  # any other error reply (WRONGTYPE, ERR ...)
    INTERNAL = "internal"  # not the server's: a bug in the router


#: Error codes that mean the server as a whole refuses writes for now.
OUTAGE_CODES = frozenset(
    {
        "OOM",
        "READONLY",
        "LOADING",
        "BUSY",
        "MASTERDOWN",
        "NOREPLICAS",
        "MISCONF",
        "CLUSTERDOWN",
        "TRYAGAIN",
        "NOTBUSY",
        "UNBLOCKED",
    }
)

_CODES = {"NOGROUP": Failure.NO_GROUP, "BUSYGROUP": Failure.GROUP_EXISTS}
_CODES |= {"NOSCRIPT": Failure.NO_SCRIPT, "NOPERM": Failure.NO_PERMISSION}
_NO_KEY_TEXT = "requires the key to exist"  # XGROUP CREATE's ERR for a missing stream


def classify_reply(text: str) -> Failure:
    """The failure an error reply is, by its code (its first word, as the server sent it)."""
    code = text.lstrip("-").split(" ", 1)[0].split(":", 1)[0]
    if code in OUTAGE_CODES:
        return Failure.OUTAGE
    found = _CODES.get(code)
    if found is not None:
        return found
    return Failure.NO_KEY if _NO_KEY_TEXT in text else Failure.RESPONSE


def json_reason(exc: ValueError) -> Reason:
    """The dead-letter reason for data orjson refused, from its message (its only signal)."""
    text = str(exc)
    if "UTF-8" in text or "surrogate" in text:
        return Reason.INVALID_ENCODING
    if "recursion" in text or "depth limit" in text:  # orjson's own limit (1024)
        return Reason.TOO_DEEP
    return Reason.INVALID_JSON


class SynapseError(Exception):
    """Root of every error Synapse raises on purpose."""

    exit_code: ClassVar[int] = EXIT_FAILED


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

    exit_code: ClassVar[int] = EXIT_CONFIG

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))

    @classmethod
    def single(cls, file: str, line: int | None, message: str) -> ConfigError:
        return cls([Problem(file, line, message)])


class InvalidEvent(SynapseError):
    """An event that can never be routed: dead-letter it on its first delivery."""

    def __init__(self, reason: Reason, detail: str) -> None:
        try:
            self.reason = Reason(reason)
        except ValueError:
            raise ValueError(f"unknown dead-letter reason {reason!r}") from None
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}")


class Outage(SynapseError):
    """The server refuses writes as a whole (OOM, READONLY, LOADING...): back off, not ready."""


class ConsumerInUse(SynapseError):
    """Another live router holds this consumer name in the group: refuse to start."""

    exit_code: ClassVar[int] = EXIT_TEMPFAIL  # retry once the other lease expires


class UsageError(SynapseError):
    """Bad command-line input."""

    exit_code: ClassVar[int] = EXIT_USAGE
