"""The model runtime: loads every model that becomes ready, and reports what it cannot load.

    .venv/bin/python examples/runtime.py

Subscribes to ``model.ready`` on ``model-events`` as the service ``runtime``. "Loading"
checks the artifact: a local file (``file://``) that exists and starts with the ONNX
magic the trainer writes. A load that fails publishes ``runtime.error`` (which the
router sends to ``error-events``, where the monitor sees it) and raises, so the event
is retried and, after 3 deliveries, dead-lettered for this service alone.
SIGTERM / Ctrl-C: finishes the load in hand and exits 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from synapse.client import Bus
from synapse.modelkit import ErrorEvent, ModelReadyEvent

bus = Bus(service="runtime")
loaded: dict[str, str] = {}


def artifact_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise ValueError(f"this runtime loads file:// artifacts only, not {parts.scheme}://")
    return Path(url2pathname(parts.path))


@bus.subscribe("model-events", types="model.ready", model=ModelReadyEvent, start="earliest",
               max_deliveries=3, retry_backoff_s=0.5, concurrency=1)  # fmt: skip
async def load(ready: ModelReadyEvent) -> None:
    try:
        path = artifact_path(ready.artifact_uri)
        with path.open("rb") as artifact:
            head = artifact.read(4)
        if head != b"ONNX":
            raise ValueError(f"{path} is not an ONNX file")
    except (OSError, ValueError) as exc:
        await bus.publish(
            ErrorEvent(
                service="runtime", severity="error",
                message=f"cannot load {ready.model_id} {ready.version}: {exc}",
            ).with_type("runtime.error")
        )  # fmt: skip
        raise
    loaded[ready.model_id] = ready.version
    print(f"runtime: loaded {ready.model_id} {ready.version} from {path}", flush=True)


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    bus.run_forever()
