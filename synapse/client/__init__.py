"""``synapse.client``: publish and subscribe on the bus (DESIGN.md "Services on the bus")."""

from __future__ import annotations

from synapse.client.event import Event, decode

__all__ = ["Event", "decode"]
