"""What happens to each entry a subscriber reads: decode, route, hand to a lane.

``Dispatcher`` is the per-entry half of the subscriber (``subscriber.py`` has the
loop). An entry goes to the first subscription on its stream whose type globs match
(cached per (stream, type)); each subscription's entries of a read run in at most
``concurrency`` lanes. A handler that returns: acknowledged (with ``dedupe_s``, marked
and acknowledged atomically, the lane waiting for the write); one that raises: tried
again after a capped backoff (XCLAIM counts the delivery), dead-lettered with
``handler_error`` at ``max_deliveries``. Invalid entries are dead-lettered at once with
the router's reason code, crash loops (more than ``max_deliveries`` deliveries without
an outcome) with ``max_deliveries``. Outcomes go to ``Acks`` (written behind).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from synapse import keys
from synapse.client import tracing
from synapse.client.event import Event, decode
from synapse.client.handling import Handling
from synapse.client.subscription import Subscription, route, route_any
from synapse.errors import InvalidEvent
from synapse.plan import Entry

#: (stream, type) -> subscription decisions kept (types are few; cleared when full).
ROUTE_CACHE_MAX = 10_000


class Dispatcher(Handling):
    """Routes read entries to their subscriptions and runs them in lanes."""

    async def process(
        self, stream: str, entries: Sequence[Entry], deliveries: dict[bytes, int] | None
    ) -> None:
        """Run the handlers of one stream's entries; return when every one has an outcome."""
        await self._dispatch(stream, entries, deliveries or {}, skip_retrying=True)

    async def _dispatch(
        self,
        stream: str,
        entries: Sequence[Entry],
        counts: dict[bytes, int],
        *,
        skip_retrying: bool,
    ) -> None:
        subs = self.subscriptions
        batches: list[list[tuple[Event, bytes]]] = [[] for _ in subs]
        once: list[tuple[int, Event, bytes]] = []
        retrying = self._retrying if skip_retrying else None
        routes = self._routes
        plain = self._plain
        for entry_id, fields in entries:
            if retrying and (stream, entry_id) in retrying:
                continue  # ours, waiting to be tried again: seen again by a drain or reclaim
            deliveries = counts.get(entry_id, 1) if counts else 1
            if fields is not None and deliveries == 1:
                # The common case inline: decode, route (cached), queue for its lane.
                try:
                    event = decode(stream, entry_id, fields)
                except InvalidEvent as exc:
                    self._dead(stream, entry_id, fields, exc.reason, exc.detail, 1)
                    continue
                index = routes.get((stream, event.type))
                if index is None:
                    index = self._route(stream, event.type)
                if index >= 0 and plain[index]:
                    batches[index].append((event, entry_id))
                    continue
                picked: tuple[int, Event] | None = (index, event) if index >= 0 else None
                if picked is None:
                    self.skipped += 1
                    self.io.acks.ack(stream, entry_id)
            else:
                picked = self._pick(stream, entry_id, fields, deliveries)
            if picked is not None:
                index, event = picked
                if subs[index].dedupe_s is None:
                    batches[index].append((event, entry_id))
                else:
                    once.append((index, event, entry_id))
        if once:
            marks = [keys.dedupe_mark(self.service, e.dedupe_key) for _, e, _ in once]
            for (index, event, entry_id), marked in zip(
                once, await self.io.marked(marks), strict=True
            ):
                if marked:
                    self.deduped += 1
                    self.io.acks.ack(stream, entry_id)
                else:
                    batches[index].append((event, entry_id))
        self._tracing = tracing.active()
        runs = [self._lanes(subs[i], items) for i, items in enumerate(batches) if items]
        if not runs:
            return
        held = (stream, [entry_id for items in batches for _, entry_id in items])
        self._holding.append(held)
        try:
            if len(runs) == 1:
                await runs[0]
            else:
                await asyncio.gather(*runs)
        finally:
            self._holding.remove(held)

    async def _lanes(self, sub: Subscription, items: list[tuple[Event, bytes]]) -> None:
        """Handle ``items`` with at most ``sub.concurrency`` handlers in flight."""
        pending = iter(items)
        # The plain case (async handler; no dedupe, no model) runs inline, without a
        # coroutine per entry; a span (tracing) sends it through ``_handle``.
        plain = sub.dedupe_s is None and sub.is_async and sub.model is None
        handler, ack = sub.handler, self.io.acks.ack

        async def lane() -> None:
            for event, entry_id in pending:
                try:
                    if not plain or self._tracing:
                        await self._handle(sub, event, entry_id)
                        continue
                    try:
                        await handler(event)
                    except Exception as exc:
                        error = self._report(sub, event, exc, None)
                        await self._failed(sub, event, entry_id, error)
                        continue
                    self.handled += 1
                    ack(event.stream, entry_id)
                except Exception as exc:  # a bug here must not drop the rest of the batch
                    self.log.exception("handler_dispatch_error", error=repr(exc))

        lanes = min(sub.concurrency, len(items))
        if lanes <= 1:
            await lane()
            return
        # One lane first: a handler that never waits runs the whole batch in it. The
        # other lanes start only if items are left once the first lane has yielded.
        first = asyncio.ensure_future(lane())
        await asyncio.sleep(0)
        if first.done():
            first.result()
            return
        await asyncio.gather(first, *(lane() for _ in range(lanes - 1)))

    def _pick(
        self, stream: str, entry_id: bytes, fields: list[bytes] | None, deliveries: int
    ) -> tuple[int, Event] | None:
        """The subscription (its index) and event for one entry, or None when settled here."""
        if fields is None:  # deleted while pending
            self.io.acks.ack(stream, entry_id)
            return None
        try:
            event = decode(stream, entry_id, fields, deliveries=deliveries)
        except InvalidEvent as exc:
            self._dead(stream, entry_id, fields, exc.reason, exc.detail, deliveries)
            return None
        index = self._route(stream, event.type)
        if index < 0:
            self.skipped += 1
            self.io.acks.ack(stream, entry_id)
            return None
        sub = self.subscriptions[index]
        if deliveries > sub.max_deliveries:
            error = (
                f"delivered {deliveries} times without an outcome "
                f"(max_deliveries={sub.max_deliveries})"
            )
            self._dead(stream, entry_id, fields, "max_deliveries", error, deliveries)
            return None
        return index, event

    def _route(self, stream: str, event_type: str) -> int:
        """The index of the subscription for (stream, type), -1 for none (cached, bounded)."""
        key = (stream, event_type)
        found = self._routes.get(key)
        if found is None:
            if stream == self.retry_stream:
                sub = route_any(self.subscriptions, event_type)
            else:
                sub = route(self.subscriptions, stream, event_type)
            found = -1 if sub is None else self.subscriptions.index(sub)
            if len(self._routes) >= ROUTE_CACHE_MAX:
                self._routes.clear()
            self._routes[key] = found
        return found
