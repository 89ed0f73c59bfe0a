"""One stream entry as a service sees it: the ``Event`` and the pure ``decode``.

An entry follows the wire conventions of DESIGN.md "Events on the wire": the type
is the ``type`` field (else the body's ``type``), the body is the JSON in ``data``
(else the fields as strings). Parsing is ``synapse.events.parse``, the router's own,
so a service and the router never disagree about what an entry says. The
CloudEvents attributes a publisher adds (``id``, ``source``, ``time``) and the
provenance the router adds (``synapse-source``, ``synapse-id``, ``synapse-route``)
are read from the fields; the raw fields are kept, in order, for anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from synapse import keys
from synapse.events import Limits, pairs, parse

#: Parsing bounds for services: the router's defaults.
DEFAULT_LIMITS = Limits()

#: CloudEvents 1.0 attribute names carried as entry fields beside ``type`` and ``data``.
F_CE_ID = b"id"
F_CE_SOURCE = b"source"
F_CE_TIME = b"time"
F_CE_SPECVERSION = b"specversion"
F_TRACEPARENT = b"traceparent"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """An event read from a stream.

    ``data`` is the body (a dict); ``id``, ``time`` and ``source`` are the
    CloudEvents attributes when the publisher wrote them (None otherwise);
    ``origin`` is the (source stream, entry id) the router copied it from, and
    ``route`` the route that did, when it came through the router; ``deliveries``
    counts this delivery (1 the first time); ``fields`` is the raw entry.
    """

    type: str
    data: Any
    stream: str
    entry_id: str
    id: str | None = None
    time: str | None = None
    source: str | None = None
    deliveries: int = 1
    origin: tuple[str, str] | None = None
    route: str | None = None
    fields: tuple[bytes, ...] = field(default=(), repr=False)

    @classmethod
    def from_entry(
        cls,
        stream: str | bytes,
        entry_id: str | bytes,
        fields: Sequence[bytes],
        *,
        deliveries: int = 1,
        limits: Limits = DEFAULT_LIMITS,
    ) -> Event:
        """Decode one raw entry; raise ``InvalidEvent`` (with its reason) when it is not one."""
        return decode(stream, entry_id, fields, deliveries=deliveries, limits=limits)

    @property
    def dedupe_key(self) -> str:
        """What identifies this event across copies: its ``id``, else its origin, else the entry."""
        if self.id:
            return f"id:{self.id}"
        if self.origin is not None:
            return f"origin:{self.origin[0]}/{self.origin[1]}"
        return f"entry:{self.stream}/{self.entry_id}"

    def get_field(self, name: str) -> str | None:
        """One raw field as text (last duplicate wins), or None."""
        value = pairs(self.fields).get(name.encode())
        return None if value is None else value.decode("utf-8", "replace")

    def to_dict(self) -> dict[str, Any]:
        """The JSON view: type, data, id, time, source, stream, entry_id (+ origin/route)."""
        out: dict[str, Any] = {
            "type": self.type,
            "data": self.data,
            "id": self.id,
            "time": self.time,
            "source": self.source,
            "stream": self.stream,
            "entry_id": self.entry_id,
        }
        if self.origin is not None:
            out["origin"] = {"stream": self.origin[0], "id": self.origin[1]}
        if self.route is not None:
            out["route"] = self.route
        return out


def decode(
    stream: str | bytes,
    entry_id: str | bytes,
    fields: Sequence[bytes],
    *,
    deliveries: int = 1,
    limits: Limits = DEFAULT_LIMITS,
) -> Event:
    """The ``Event`` of one raw entry (pure); raise ``InvalidEvent`` when it is not one."""
    event_type, body = parse(fields, limits)
    found = pairs(fields)
    origin_stream = found.get(keys.F_SOURCE)
    origin_id = found.get(keys.F_ID)
    origin = (
        (_text(origin_stream), _text(origin_id))
        if origin_stream is not None and origin_id is not None
        else None
    )
    return Event(
        type=event_type,
        data=body,
        stream=_text(stream),
        entry_id=_text(entry_id),
        id=_opt(found.get(F_CE_ID)),
        time=_opt(found.get(F_CE_TIME)),
        source=_opt(found.get(F_CE_SOURCE)),
        deliveries=deliveries,
        origin=origin,
        route=_opt(found.get(keys.F_ROUTE)),
        fields=tuple(fields),
    )


def _text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _opt(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")
