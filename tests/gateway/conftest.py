"""Gateway fixtures: a real gateway in the test's event loop, on a free port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import pytest

from synapse.gateway.app import Gateway
from synapse.gateway.settings import GatewaySettings


@contextlib.asynccontextmanager
async def serving(url: str, **overrides: Any) -> AsyncIterator[Gateway]:
    """A started gateway on 127.0.0.1:<free port> until the block exits."""
    settings = replace(GatewaySettings(url=url, port=0), **overrides)
    gateway = Gateway(settings)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop()


def base_url(gateway: Gateway) -> str:
    return f"http://127.0.0.1:{gateway.port}"


@pytest.fixture
def gateway_at(url: str) -> Callable[..., contextlib.AbstractAsyncContextManager[Gateway]]:
    """``async with gateway_at(max_clients=2) as gw:`` on the flushed test server."""

    def start(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Gateway]:
        return serving(url, **overrides)

    return start
