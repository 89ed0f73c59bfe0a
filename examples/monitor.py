"""The monitor: prints an alert for every error any service reports.

    .venv/bin/python examples/monitor.py

Subscribes to ``*.error`` events on ``error-events`` as the service ``monitor``
(a sync handler: it runs in a thread). SIGTERM / Ctrl-C exits 0.
"""

from __future__ import annotations

import argparse

from synapse.client import Bus, Event

bus = Bus(service="monitor")


@bus.subscribe("error-events", types="*.error", start="earliest")
def alert(event: Event) -> None:
    body = event.data
    severity = str(body.get("severity", "error")).upper()
    print(f"ALERT {severity} {body.get('service')}: {body.get('message')} "
          f"({event.type}, id={event.id})", flush=True)  # fmt: skip


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    bus.run_forever()
