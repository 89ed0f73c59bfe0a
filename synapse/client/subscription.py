"""What ``Bus.subscribe`` records: streams, type globs, the handler and its policy.

Several subscriptions may share a stream (one consumer group per service, so one
read); an entry goes to the first subscription, in the order they were made, whose
stream and type globs match it. Entries no subscription wants are acknowledged and
skipped. Pure: matching and option checks only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from synapse.matching import GlobTest, compile_glob

#: What a handler may be: ``async def h(event)`` or ``def h(event)`` (run in a thread).
Handler = Callable[[Any], Any]

DEFAULT_CONCURRENCY = 16
DEFAULT_MAX_DELIVERIES = 5
DEFAULT_RETRY_BACKOFF_S = 5.0
DEFAULT_CLAIM_IDLE_MS = 30_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    """One handler on one or more streams, for the event types its globs match.

    ``retry_backoff_s`` caps the wait before a failed event is tried again
    (exponential from 0.1 s, full jitter); ``model`` is a class with
    ``model_validate`` (a ModelKit / pydantic model) the handler receives instead
    of the ``Event``.
    """

    streams: tuple[str, ...]
    types: tuple[str, ...]
    handler: Handler
    name: str
    is_async: bool
    concurrency: int = DEFAULT_CONCURRENCY
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S
    dedupe_s: float | None = None
    claim_idle_ms: int = DEFAULT_CLAIM_IDLE_MS
    start: str = "latest"
    model: Any = None
    _tests: tuple[GlobTest, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tests", tuple(compile_glob(t) for t in self.types))

    def wants(self, event_type: str) -> bool:
        """Whether ``event_type`` matches one of the type globs (every type when none)."""
        return not self._tests or any(test(event_type) for test in self._tests)


def make(
    streams: str | Sequence[str],
    handler: Handler,
    *,
    types: str | Sequence[str] | None,
    concurrency: int,
    max_deliveries: int,
    retry_backoff_s: float,
    dedupe_s: float | None,
    claim_idle_ms: int,
    start: str,
    model: Any,
) -> Subscription:
    """A checked ``Subscription``: bad options raise ``ValueError`` naming the option."""
    names = (streams,) if isinstance(streams, str) else tuple(streams)
    if not names or not all(isinstance(s, str) and s for s in names):
        raise ValueError("subscribe needs one or more stream names")
    globs = () if types is None else (types,) if isinstance(types, str) else tuple(types)
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if max_deliveries < 1:
        raise ValueError(f"max_deliveries must be >= 1, got {max_deliveries}")
    if retry_backoff_s <= 0:
        raise ValueError(f"retry_backoff_s must be > 0, got {retry_backoff_s}")
    if dedupe_s is not None and dedupe_s <= 0:
        raise ValueError(f"dedupe_s must be > 0 (or None), got {dedupe_s}")
    if claim_idle_ms < 1:
        raise ValueError(f"claim_idle_ms must be >= 1, got {claim_idle_ms}")
    if start not in ("latest", "earliest"):
        raise ValueError(f"start must be 'latest' or 'earliest', got {start!r}")
    if model is not None and not hasattr(model, "model_validate"):
        raise ValueError("model= must be a ModelKit (pydantic) class with model_validate")
    if not callable(handler):
        raise TypeError("the handler must be callable")
    return Subscription(
        streams=names,
        types=globs,
        handler=handler,
        name=getattr(handler, "__qualname__", repr(handler)),
        is_async=inspect.iscoroutinefunction(handler),
        concurrency=concurrency,
        max_deliveries=max_deliveries,
        retry_backoff_s=retry_backoff_s,
        dedupe_s=dedupe_s,
        claim_idle_ms=claim_idle_ms,
        start=start,
        model=model,
    )


def route(
    subscriptions: Sequence[Subscription], stream: str, event_type: str
) -> Subscription | None:
    """The first subscription on ``stream`` that wants ``event_type``, or None."""
    for sub in subscriptions:
        if stream in sub.streams and sub.wants(event_type):
            return sub
    return None


def route_any(subscriptions: Sequence[Subscription], event_type: str) -> Subscription | None:
    """The first subscription, on any stream, that wants ``event_type`` (the retry stream)."""
    for sub in subscriptions:
        if sub.wants(event_type):
            return sub
    return None
