"""The plan of an entry out of attempts because some destinations refused it.

``retry.verdict`` says when to give up; this says what is written then: the
copies that can be written, and one dead letter per refused destination, which
records ``synapse-destination`` and ``synapse-route`` so that ``synapse dlq
redrive`` writes it to that destination only. Pure, like ``plan.py``.
"""

from __future__ import annotations

from collections.abc import Mapping

from synapse.errors import Reason
from synapse.events import LUA_MAX_FIELDS, dead_letter_fields
from synapse.plan import DEAD_LETTER, ROUTED, EntryPlan, Planner, Write


def give_up(
    planner: Planner,
    src: bytes,
    entry: EntryPlan,
    fields: list[bytes],
    refused: Mapping[str, str],
    deliveries: int,
    now_ms: int,
) -> EntryPlan:
    """An entry out of attempts because of ``refused`` destinations (name -> error): its
    other copies, and one dead letter per refused destination (``destination_error``,
    ``synapse-destination``); the dead letter of a refused dead-letter write stays as is."""
    writes: list[Write] = []
    routes: list[tuple[str, str]] = []
    route_of = {dest: route for dest, route in entry.routes}
    table = planner.table
    for write in entry.writes:
        error = refused.get(write.stream)
        if error is None:
            writes.append(write)
            if write.stream in route_of:
                routes.append((write.stream, route_of[write.stream]))
            continue
        route = route_of.get(write.stream)
        if route is None:
            continue  # a dead-letter write that was refused: nothing else to write it to
        dlq_fields = dead_letter_fields(
            fields,
            reason=Reason.DESTINATION_ERROR,
            error=f"{write.stream}: {error}",
            source=src,
            entry_id=entry.entry_id,
            deliveries=deliveries,
            config_hash=table.hash,
            now_ms=now_ms,
            max_fields=min(table.settings.max_fields, LUA_MAX_FIELDS),
            destination=(write.stream.encode(), route.encode()),
        )
        dead_letter = table.settings.dead_letter
        writes.append(Write(dead_letter, dlq_fields, planner.routing.maxlen_for(dead_letter)))
    return EntryPlan(
        entry.entry_id,
        ROUTED if routes else DEAD_LETTER,
        tuple(writes),
        tuple(routes),
        reason=Reason.DESTINATION_ERROR,
        error=next(iter(refused.values()), None),
        event_type=entry.event_type,
    )
