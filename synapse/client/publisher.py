"""``publish`` / ``publish_many``: the envelope, the optional table check, the write.

An event's fields are built once (so its ``id`` is chosen once) and the XADD is
re-sent with the same fields when the connection fails before a reply: a retried
publish is the same event, which ``dedupe_s`` subscribers handle once.
``publish_many`` packs every XADD into one write (hiredis) and reads the replies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from synapse import wire
from synapse.backoff import Backoff
from synapse.client import envelope, tracing
from synapse.client.validate import Checker

#: One item of ``publish_many``: (type, data), or a ModelKit model.
Item = tuple[str, dict[str, Any]] | Any

RETRYABLE = (RedisConnectionError, RedisTimeoutError, RedisClusterException, OSError)


def type_and_data(event: Any, data: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(type, body) of ``publish``'s arguments: a type and a dict, or a ModelKit model."""
    if isinstance(event, str):
        return event, {} if data is None else data
    event_type = getattr(event, "type_name", None) or getattr(event, "event_type", None)
    dump = getattr(event, "model_dump", None)
    if isinstance(event_type, str) and callable(dump):
        if data is not None:
            raise TypeError("publish(model) takes no data: the model is the data")
        body = dump(mode="json", exclude_none=True)
        return event_type, body
    raise TypeError(
        f"publish takes an event type and a dict, or a ModelKit model; got {type(event).__name__}"
    )


class Publisher:
    """Builds and writes events for one service."""

    def __init__(
        self,
        service: str,
        *,
        checker: Checker | None,
        stream: str,
        type_field: str = "type",
        data_field: str = "data",
        attempts: int = 3,
        backoff: Backoff | None = None,
    ) -> None:
        self.service = service
        self.checker = checker
        self.stream = stream
        self.type_field = type_field.encode()
        self.data_field = data_field.encode()
        self.attempts = attempts
        self.backoff = backoff or Backoff()
        self.types: dict[str, None] = {}  # event types published (for the registry)
        self.streams: dict[str, None] = {}

    def build(
        self,
        event: Any,
        data: dict[str, Any] | None = None,
        *,
        stream: str | None = None,
        event_id: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> tuple[str, list[bytes], str]:
        """(stream, fields, id) of one event; checked against the table when there is one."""
        event_type, body = type_and_data(event, data)
        target = stream or self.stream
        chosen = event_id or envelope.new_id()
        fields = envelope.entry_fields(
            event_type,
            envelope.dump_data(body),
            event_id=chosen,
            source=self.service,
            time=envelope.rfc3339_now(),
            traceparent=tracing.current_traceparent(),
            type_field=self.type_field,
            data_field=self.data_field,
            extra=extra,
        )
        if self.checker is not None:
            self.checker.check(target, fields, event_type, body)
        self.types.setdefault(event_type)
        self.streams.setdefault(target)
        return target, fields, chosen

    async def publish(
        self,
        client: wire.Client,
        event: Any,
        data: dict[str, Any] | None = None,
        *,
        stream: str | None = None,
        event_id: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> str:
        """Write one event; re-send the same fields when the connection fails; its id."""
        event_type, _ = type_and_data(event, data)
        with tracing.publish_span(event_type, stream or self.stream):
            target, fields, chosen = self.build(
                event, data, stream=stream, event_id=event_id, extra=extra
            )
            for attempt in range(1, self.attempts + 1):
                try:
                    await wire.execute(client, "XADD", target, "*", *fields)
                    return chosen
                except RETRYABLE:
                    if attempt == self.attempts:
                        raise
                    await asyncio.sleep(self.backoff.delay_s(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    async def publish_many(
        self, client: wire.Client, items: Iterable[Item], *, stream: str | None = None
    ) -> list[str]:
        """Write many events in one round trip (checked first: none written if one is bad)."""
        built = [
            self.build(item) if not isinstance(item, tuple) else self.build(*item, stream=stream)
            for item in items
        ]
        if stream is not None:
            built = [(stream, f, i) for _, f, i in built]
        commands = [("XADD", target, "*", *fields) for target, fields, _ in built]
        if not commands:
            return []
        for attempt in range(1, self.attempts + 1):
            try:
                if isinstance(client, RedisCluster):
                    for command in commands:
                        await wire.execute(client, *command)
                else:
                    await wire.execute_many(client, commands)
                break
            except RETRYABLE:
                if attempt == self.attempts:
                    raise
                await asyncio.sleep(self.backoff.delay_s(attempt))
        return [chosen for _, _, chosen in built]
