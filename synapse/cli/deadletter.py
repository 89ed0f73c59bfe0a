"""Dead letters as the ``synapse dlq`` commands see them: one entry, the filters, selection.

A dead letter is the original producer's fields plus the ``synapse-*`` fields the
router added (reason, error, provenance, redrive count). ``Selection`` is the
``--reason/--source/--since/--until`` filter every dlq command shares, given to a
command as one parameter by ``selection_options``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from synapse import keys
from synapse.cli import common
from synapse.cli.times import ms_time
from synapse.config import RoutingTable
from synapse.errors import REASONS
from synapse.events import pairs
from synapse.kafka.names import DEFAULT_DLQ
from synapse.kafka.url import Kind, backend_kind

#: What a ``synapse-consumer`` may name: a service (no spaces, globs or braces).
SERVICE_NAME = re.compile(r"[^\s*?\[\]{}]{1,200}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    entry_id: str
    fields: list[bytes]
    #: Times its event was redriven before, from the redrive-count hash (``counted``):
    #: never from a field, which the producer of the event could have set.
    redrives: int = 0
    #: Kafka: the record's key (kept on a redriven copy) and timestamp (ms; -1: none).
    #: None on Redis, where the entry id holds the time.
    key: bytes | None = None
    ms: int | None = None

    @property
    def meta(self) -> dict[bytes, bytes]:
        return pairs(self.fields)

    def get(self, name: bytes) -> str:
        return common.text(self.meta.get(name))

    @property
    def count_field(self) -> bytes:
        """Its entry's field in the redrive-count hash: ``<source>\\0<source id>``."""
        return self.get(keys.F_SOURCE).encode() + b"\0" + self.get(keys.F_ID).encode()

    def original(self) -> list[bytes]:
        """The fields as the producer wrote them: every synapse-* field stripped."""
        out: list[bytes] = []
        for i in range(0, len(self.fields) - 1, 2):
            if not self.fields[i].startswith(b"synapse-"):
                out += (self.fields[i], self.fields[i + 1])
        return out

    def as_json(self, full: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.entry_id,
            "time": self.get(keys.F_TIME) or self._id_time(),
            "reason": self.get(keys.F_REASON),
            "error": self.get(keys.F_ERROR),
            "source": self.get(keys.F_SOURCE),
            "source_id": self.get(keys.F_ID),
            "type": self.get(b"type") or None,
            "deliveries": int(self.get(keys.F_DELIVERIES) or 0),
            "redrives": self.redrives,
            "destination": self.get(keys.F_DESTINATION) or None,
            "consumer": self.get(keys.F_CONSUMER) or None,
            "config": self.get(keys.F_CONFIG),
            "truncated": self.get(keys.F_TRUNCATED) or None,
        }
        if self.key is not None:
            data["key"] = common.text(self.key)
        if full:
            data["fields"] = {common.text(k): common.text(v) for k, v in self.meta.items()}
        return data

    def _id_time(self) -> str:
        if self.ms is None:
            return common.id_time(self.entry_id)
        return ms_time(self.ms) if self.ms >= 0 else ""

    def with_redrives(self, count: int) -> DeadLetter:
        return DeadLetter(
            entry_id=self.entry_id, fields=self.fields, redrives=count, key=self.key, ms=self.ms
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which dead letters a command acts on; ``since``/``until`` as given (time or id)."""

    reasons: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None

    @property
    def narrowed(self) -> bool:
        """Whether any filter was given (otherwise: every dead letter)."""
        return bool(self.reasons or self.sources or self.since or self.until)


def select(
    client: common.Client, stream: str, chosen: Selection, ids: tuple[str, ...] = ()
) -> Iterator[DeadLetter]:
    """Dead letters matching every filter (or exactly ``ids``), oldest first, up to the last
    one present now. The time bounds are parsed at once, before the first entry is read."""
    since = common.parse_when(chosen.since) if chosen.since else None
    until = common.parse_when(chosen.until) if chosen.until else None
    if ids:
        return _by_id(client, stream, tuple(common.entry_id(i) for i in ids))
    return _scan(client, stream, chosen, since, until)


def _by_id(client: common.Client, stream: str, ids: tuple[str, ...]) -> Iterator[DeadLetter]:
    for entry_id in ids:
        for eid, fields in common.xrange(client, stream, entry_id, entry_id, 1):
            yield DeadLetter(entry_id=common.text(eid), fields=fields)


def _scan(
    client: common.Client, stream: str, chosen: Selection, since: str | None, until: str | None
) -> Iterator[DeadLetter]:
    end = until or common.last_id(client, stream)
    if end is None:
        return
    for eid, fields in common.scan_range(client, stream, since or "-", end):
        letter = DeadLetter(entry_id=common.text(eid), fields=fields)
        if chosen.reasons and letter.get(keys.F_REASON) not in chosen.reasons:
            continue
        if chosen.sources and letter.get(keys.F_SOURCE) not in chosen.sources:
            continue
        yield letter


def counted(client: common.Client, stream: str, letters: list[DeadLetter]) -> list[DeadLetter]:
    """``letters`` with their redrive counts from ``stream``'s redrive-count hash."""
    if not letters:
        return letters
    found = common.call(
        client, "HMGET", keys.redrive_counts(stream), *(x.count_field for x in letters)
    )
    out = []
    for letter, raw in zip(letters, found, strict=True):
        try:
            count = int(raw or 0)
        except ValueError:
            count = 0
        out.append(letter.with_redrives(count))
    return out


def target_of(
    letter: DeadLetter,
    target: str | None,
    table: RoutingTable | None,
    retry: Callable[[str], str] = keys.retry_stream,
) -> tuple[str, str]:
    """Where the dead letter goes, or why it cannot go anywhere without ``--to``.

    A dead letter's fields are only as trustworthy as whoever wrote the dead-letter
    stream, so without ``--to`` it goes only to a stream the table consumes
    (``synapse-source``) or, for the dead letter of one refused destination, to a
    destination the table writes (``synapse-destination``). A handler's dead letter
    (``synapse-consumer``, written by ``synapse.client``) goes to that service's retry
    stream (``retry``: ``synapse:retry:<service>`` on Redis, ``synapse.retry.<service>``
    on Kafka), which only that service reads.
    """
    if target:
        return target, ""
    consumer = letter.get(keys.F_CONSUMER)
    if consumer:
        if not SERVICE_NAME.fullmatch(consumer):
            return "", f"synapse-consumer {consumer!r} is not a service name; pass --to"
        try:
            return retry(consumer), ""
        except ValueError as exc:
            return "", f"{exc}; pass --to"
    destination = letter.get(keys.F_DESTINATION)
    source = letter.get(keys.F_SOURCE)
    if table is None:
        return "", "no routing table (--config) to check where it goes; pass --to"
    if destination:
        if destination not in written_by(table):
            return "", f"synapse-destination {destination!r} is not a destination of the table"
        return destination, ""
    if not source:
        return "", "no synapse-source field; pass --to"
    if not any(test(source) for test in table.source_globs):
        return "", f"synapse-source {source!r} is not a stream the table consumes; pass --to"
    return source, ""


def written_by(table: RoutingTable) -> frozenset[str]:
    """Every stream the table copies events to (routes' destinations, the unrouted one)."""
    unrouted = table.settings.unrouted
    extra = {unrouted} if unrouted not in ("dead-letter", "drop") else set()
    return table.destinations | extra


def redrive_fields(letter: DeadLetter, target: str | None) -> list[bytes]:
    """What a redrive writes: the original fields; to the recorded destination, with the
    provenance the router would have added; to a source, with the new redrive count."""
    original = letter.original()
    if not target and letter.get(keys.F_DESTINATION):
        meta = letter.meta
        provenance = (keys.F_SOURCE, keys.F_ID, keys.F_ROUTE)
        return [*original, *(x for f in provenance for x in (f, meta.get(f, b"")))]
    return original


def stream_name(stream: str | None, config_path: Path) -> str:
    """``--stream``, else the config's dead-letter stream, else the default one (of the
    store the URL names: ``synapse:dlq`` on Redis, ``synapse.dlq`` on Kafka)."""
    if stream:
        return stream
    kind = store_kind()
    table = common.table_or_none(config_path, kind)
    if table:
        return table.settings.dead_letter
    return DEFAULT_DLQ if kind == "kafka" else keys.DEFAULT_DEAD_LETTER


def store_kind() -> Kind:
    """The backend the resolved URL names (Redis when none is given yet: the command
    says so when it connects)."""
    url = common.resolved_url()
    return backend_kind(url) if url else "redis"


def selection_options(func: Callable[..., Any]) -> Any:
    """``--reason/--source/--since/--until``, handed to the command as ``chosen: Selection``."""

    @functools.wraps(func)
    def command(
        *args: Any,
        reasons: tuple[str, ...],
        sources: tuple[str, ...],
        since: str | None,
        until: str | None,
        **kwargs: Any,
    ) -> Any:
        chosen = Selection(reasons=reasons, sources=sources, since=since, until=until)
        return func(*args, chosen=chosen, **kwargs)

    wrapped: Any = command
    wrapped = click.option("--until", help="Up to this time or id (ISO 8601, -2h, id).")(wrapped)
    wrapped = click.option("--since", help="From this time or id (ISO 8601, -2h, id).")(wrapped)
    wrapped = click.option("--source", "sources", multiple=True, help="Original source (repeat).")(
        wrapped
    )
    return click.option(
        "--reason",
        "reasons",
        multiple=True,
        type=click.Choice(REASONS),
        metavar="REASON",
        help=f"Reason code (repeat): {', '.join(REASONS)}.",
    )(wrapped)


def dlq_options(func: Any) -> Any:
    """The options of every dlq command: --stream, --config, connection, --json, --debug."""
    func = click.option("--stream", help="Dead-letter stream (default: the config's).")(func)
    func = common.config_option(func)
    func = common.connection_options(func)
    func = common.json_option(func)
    return common.debug_option(func)
