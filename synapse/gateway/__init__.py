"""``synapse-gateway``: browsers subscribe to streams over Server-Sent Events.

A separate, optional process (DESIGN.md "Frontends"). One shared read loop per
gateway reads every stream some client watches (``hub``), one encoding per
subscription shape is shared by its clients (``channel``), each client has a
bounded buffer (``subscriber``), and ``app`` serves ``/events``, the live page
``/``, ``/healthz``, ``/readyz`` and ``/metrics``.
"""
