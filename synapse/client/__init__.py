"""``synapse.client``: publish and subscribe on the bus (docs/services.md)."""

from __future__ import annotations

from synapse.client.bus import Bus
from synapse.client.event import Event, decode
from synapse.client.seam import resolve_url
from synapse.client.validate import PublishRefused

__all__ = ["Bus", "Event", "PublishRefused", "decode", "resolve_url"]
