"""The pure core: a batch of stream entries + a routing table -> a plan.

No I/O, no clock, no globals: the caller passes the time and the delivery
counts it read from Redis. For each entry the plan says which streams get which
fields (destination copies with provenance, or one dead-letter write), or that
the entry is only acknowledged (dropped by policy, or deleted from the source).
``synapse route`` and ``synapse test`` use the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple

from synapse.config import RoutingTable
from synapse.errors import InvalidEvent, Reason
from synapse.events import (
    LUA_MAX_FIELDS,
    Limits,
    Provenance,
    copy_fields,
    dead_letter_fields,
    parse,
    provenance_base,
)
from synapse.retry import DELIVERED, GIVE_UP, verdict
from synapse.routing import Routing

#: What happens to an entry (``EntryPlan.outcome``).
Outcome = Literal["routed", "dead_letter", "dropped", "deleted"]
ROUTED: Final = "routed"
DEAD_LETTER: Final = "dead_letter"
DROPPED: Final = "dropped"
DELETED: Final = "deleted"


#: A raw entry as read: (id, flat fields), fields None when it was deleted from the source.
Entry = tuple[bytes, list[bytes] | None]
#: An XREADGROUP reply as the server sends it (raw, undecoded): per stream, its name and
#: its entries (on the wire each pair is a 2-item array).
ReadReply = Sequence[tuple[bytes, Sequence[Entry]]]


# Write and EntryPlan are built per event: immutable NamedTuples, as a frozen
# dataclass costs ~2.5x more to construct (~1.8 us vs 0.7 us for EntryPlan,
# measured: docs/performance.md). Read them by attribute, never by position. The
# planner's hot path builds them with ``_new`` (``tuple.__new__``, every field in
# order): half the cost of the generated ``__new__`` (0.16 vs 0.23 us a Write, 0.15
# vs 0.32 us an EntryPlan); tests/test_plan.py pins both ways to the same value.
_new = tuple.__new__


class Write(NamedTuple):
    """One XADD: a stream, its fields, and the retention cap (None for none).

    A destination copy holds the source fields in ``base`` (one list shared by
    every copy of the entry) and its provenance (source, entry id, route) apart,
    so the commit sends the fields once per entry; ``fields`` is what is written.
    """

    stream: str
    base: list[bytes]
    maxlen: int | None
    provenance: Provenance | None = None

    @property
    def fields(self) -> list[bytes]:
        """The fields as written (``events.copy_fields``: the layout of every copy)."""
        return copy_fields(self.base, self.provenance)


class EntryPlan(NamedTuple):
    """What happens to one entry."""

    entry_id: bytes
    outcome: Outcome
    writes: tuple[Write, ...]
    routes: tuple[tuple[str, str], ...] = ()  # (destination, route name)
    reason: Reason | None = None
    error: str | None = None
    event_type: str | None = None


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """The plan of one batch from one source."""

    source: str
    entries: tuple[EntryPlan, ...]


Resolved = tuple[tuple[str, int | None, bytes], ...]


class _Targets(dict[tuple[tuple[str, str], ...], Resolved]):
    """(destination, route) pairs -> (destination, maxlen, route as bytes), resolved once."""

    def __init__(self, routing: Routing) -> None:
        super().__init__()
        self.maxlen_for = routing.maxlen_for

    def __missing__(self, targets: tuple[tuple[str, str], ...]) -> Resolved:
        resolved = tuple((dest, self.maxlen_for(dest), route.encode()) for dest, route in targets)
        if len(self) < 10_000:  # bounded: route combinations are few in practice
            self[targets] = resolved
        return resolved


def limits_of(table: RoutingTable) -> Limits:
    s = table.settings
    return Limits(
        type_field=s.type_field.encode(),
        data_field=s.data_field.encode(),
        max_event_bytes=s.max_event_bytes,
        max_depth=s.max_depth,
        max_fields=min(s.max_fields, LUA_MAX_FIELDS),
    )


class Planner:
    """Plans batches on one table; holds only what is derived from the table (its
    ``routing``, which decides and caches)."""

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self.routing = Routing(table)
        self.limits = limits_of(table)
        self._dead_letter = table.settings.dead_letter
        self._dead_letter_maxlen = self.routing.maxlen_for(table.settings.dead_letter)
        self._provenance = table.settings.provenance
        self._max_deliveries = table.settings.max_deliveries
        self._require_schema = table.settings.require_schema
        self._targets = _Targets(self.routing)

    def plan_batch(
        self,
        source: str,
        entries: Sequence[Entry],
        now_ms: int,
        deliveries: Mapping[bytes, int] | None = None,
    ) -> BatchPlan:
        src = source.encode()
        plan_entry = self.plan_entry
        if deliveries is None:
            planned = tuple([plan_entry(source, src, eid, f, 1, now_ms) for eid, f in entries])
        else:
            planned = tuple(
                [
                    plan_entry(source, src, eid, f, deliveries.get(eid, 1), now_ms)
                    for eid, f in entries
                ]
            )
        return BatchPlan(source, planned)

    def plan_entry(
        self,
        source: str,
        src: bytes,
        entry_id: bytes,
        fields: list[bytes] | None,
        deliveries: int,
        now_ms: int,
    ) -> EntryPlan:
        if fields is None:
            return EntryPlan(entry_id, DELETED, ())
        if deliveries != 1:  # a first delivery is always planned; a redelivery asks the policy
            judged = verdict(DELIVERED, deliveries=deliveries, max_deliveries=self._max_deliveries)
            if judged.action == GIVE_UP and judged.reason is not None:
                return self.dead_letter(
                    src,
                    entry_id,
                    fields,
                    judged.reason,
                    f"delivered {deliveries} times without being committed "
                    f"(max_deliveries={self._max_deliveries})",
                    deliveries,
                    now_ms,
                )
        try:
            event_type, body = parse(fields, self.limits)
            found = self.routing.candidates(source, event_type)
            schema = found.schema
            if schema is not None:
                problem = schema.error(body)
                if problem is not None:
                    raise InvalidEvent(Reason.SCHEMA_VIOLATION, f"{schema.name}: {problem}")
            elif self._require_schema:
                raise InvalidEvent(Reason.UNKNOWN_SCHEMA, f"no schema for type {event_type!r}")
        except InvalidEvent as exc:
            return self.dead_letter(
                src, entry_id, fields, exc.reason, exc.detail, deliveries, now_ms
            )
        targets = found.targets(body)
        if not targets:
            return self.unrouted(src, entry_id, fields, event_type, deliveries, now_ms)
        return self.routed(src, entry_id, fields, targets, event_type)

    def routed(
        self,
        src: bytes,
        entry_id: bytes,
        fields: list[bytes],
        targets: tuple[tuple[str, str], ...],
        event_type: str,
    ) -> EntryPlan:
        """The plan of an entry copied to ``targets`` ((destination, route) pairs): one
        ``Write`` per destination, sharing the entry's fields without ``synapse-*`` ones,
        each with its provenance unless provenance is off."""
        resolved = self._targets[targets]
        base = provenance_base(fields)
        if self._provenance:
            copies = tuple(
                [
                    _new(Write, (dest, base, maxlen, (src, entry_id, route)))
                    for dest, maxlen, route in resolved
                ]
            )
        else:
            copies = tuple(
                [_new(Write, (dest, base, maxlen, None)) for dest, maxlen, _ in resolved]
            )
        return _new(EntryPlan, (entry_id, ROUTED, copies, targets, None, None, event_type))

    def unrouted(
        self,
        src: bytes,
        entry_id: bytes,
        fields: list[bytes],
        event_type: str,
        deliveries: int,
        now_ms: int,
    ) -> EntryPlan:
        policy = self.table.settings.unrouted
        if policy == "drop":
            return EntryPlan(entry_id, DROPPED, (), reason=Reason.NO_ROUTE, event_type=event_type)
        if policy == "dead-letter":
            return self.dead_letter(
                src,
                entry_id,
                fields,
                Reason.NO_ROUTE,
                f"no route matches type {event_type!r}",
                deliveries,
                now_ms,
                event_type=event_type,
            )
        targets = ((policy, "unrouted"),)
        return self.routed(src, entry_id, fields, targets, event_type)

    def dead_letter(
        self,
        src: bytes,
        entry_id: bytes,
        fields: list[bytes],
        reason: Reason,
        error: str,
        deliveries: int,
        now_ms: int,
        event_type: str | None = None,
    ) -> EntryPlan:
        dlq_fields = dead_letter_fields(
            fields,
            reason=reason,
            error=error,
            source=src,
            entry_id=entry_id,
            deliveries=deliveries,
            config_hash=self.table.hash,
            now_ms=now_ms,
            max_fields=self.table.settings.max_fields,
        )
        write = Write(self._dead_letter, dlq_fields, self._dead_letter_maxlen)
        return EntryPlan(
            entry_id, DEAD_LETTER, (write,), reason=reason, error=error, event_type=event_type
        )
