"""Serving a Bus's subscriptions: the one ``Subscriber`` they make, and the signals around it.

A service is one consumer group (the service's name) with one consumer per process,
however many ``subscribe`` calls it made, so the subscriptions are served by a single
``Subscriber``: the group's settings take the Bus's ``batch`` and ``block_ms``, the
shortest ``claim_idle_ms`` and the largest ``max_deliveries`` of the subscriptions.
A new group on a stream starts where the first subscription naming that stream
asked (``"latest"`` or ``"earliest"``); on the service's retry stream it starts at
the beginning, so a dead letter redriven before the service ever ran still reaches it.

While it runs, SIGTERM and SIGINT go to the Bus's handler, which only flips state
(STYLE.md habit 5); they are handed back to the default when the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from synapse.backoff import Backoff
from synapse.client.seam import Store, StreamsIO
from synapse.client.subscriber import Subscriber
from synapse.client.subscription import Subscription
from synapse.config import RouterSettings

#: The signals that stop a running Bus (a second one exits at once: ``Bus._on_signal``).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def starts(subscriptions: Sequence[Subscription], retry_stream: str) -> dict[str, str]:
    """Where each stream's group starts when it is created: ``"earliest"`` or ``"latest"``."""
    found: dict[str, str] = {}
    for sub in subscriptions:
        for stream in sub.streams:
            found.setdefault(stream, sub.start)
    found[retry_stream] = "earliest"
    return found


def make_subscriber(
    service: str,
    subscriptions: Sequence[Subscription],
    store: Store,
    *,
    consumer: str,
    batch: int,
    block_ms: int,
    dead_letter: str,
    drain_timeout_s: float,
    log: Any,
) -> Subscriber:
    """The one ``Subscriber`` serving every subscription, on ``store``'s I/O."""
    group = RouterSettings(
        group=service,
        consumer=consumer,
        batch=batch,
        block_ms=block_ms,
        claim_idle_ms=min(s.claim_idle_ms for s in subscriptions),
        max_deliveries=max(s.max_deliveries for s in subscriptions),
        dead_letter=dead_letter,
    )
    backoff = Backoff()
    log = log.bind(consumer=consumer)
    retry_stream = store.retry_stream(service)

    def io(stopping: asyncio.Event) -> StreamsIO:
        return store.streams(
            settings=group,
            starts=starts(subscriptions, retry_stream),
            stopping=stopping,
            log=log,
            backoff=backoff,
        )

    return Subscriber(
        service,
        subscriptions,
        io,
        retry_stream=retry_stream,
        dead_letter=dead_letter,
        log=log,
        backoff=backoff,
        drain_timeout_s=drain_timeout_s,
    )


@contextlib.contextmanager
def stop_signals(handler: Callable[[signal.Signals], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call ``handler(sig)`` inside the block, where the running loop
    can take them (not off the main thread, nor where the loop has no signal support)."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(sig, handler, sig)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
