"""The training service: reports progress, writes the model file, publishes ``model.ready``.

    .venv/bin/python examples/trainer.py [--model-id m1] [--version 1.0.0] [--stage production]

Run it while ``bin/run`` is up (it finds the router's server through .synapse/redis.url).
The artifact is a local file under .synapse/artifacts/; ``--no-artifact`` publishes a
``model.ready`` whose file does not exist, so the runtime's load fails and the
monitor sees the error it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from pathlib import Path

from synapse.client import Bus
from synapse.modelkit import Metrics, ModelReadyEvent, TrainingCompletedEvent, TrainingProgressEvent

ROOT = Path(__file__).resolve().parent.parent


async def main(args: argparse.Namespace) -> None:
    bus = Bus(service="trainer", config=ROOT / "config" / "routes.yaml")
    run_id = f"{args.model_id}-{args.version}"
    artifact = args.artifacts / f"{args.model_id}-{args.version}.onnx"
    async with bus:
        for epoch in range(1, 4):
            await bus.publish(
                TrainingProgressEvent(
                    run_id=run_id, model_id=args.model_id, epoch=epoch, progress=epoch / 3,
                    metrics=Metrics(loss=round(1 / epoch, 3)),
                )
            )  # fmt: skip
        if not args.no_artifact:
            artifact.parent.mkdir(parents=True, exist_ok=True)
            artifact.write_bytes(b"ONNX" + hashlib.sha256(run_id.encode()).digest())
        metrics = Metrics(accuracy=args.accuracy, loss=0.12)
        await bus.publish(
            TrainingCompletedEvent(
                run_id=run_id, model_id=args.model_id, progress=1, metrics=metrics,
                artifact_uri=artifact.as_uri(), duration_s=3.0,
            )
        )  # fmt: skip
        event_id = await bus.publish(
            ModelReadyEvent(
                model_id=args.model_id, version=args.version, artifact_uri=artifact.as_uri(),
                framework="onnx", format="onnx", stage=args.stage, metrics=metrics,
            )
        )  # fmt: skip
    print(
        f"trainer: published model.ready {args.model_id} {args.version} id={event_id}", flush=True
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-id", default="m1")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--stage", default="production")
    parser.add_argument("--accuracy", type=float, default=0.95)
    parser.add_argument("--artifacts", type=Path, default=Path(".synapse/artifacts"))
    parser.add_argument("--no-artifact", action="store_true", help="publish a missing file")
    arguments = parser.parse_args()
    arguments.artifacts = arguments.artifacts.resolve()
    asyncio.run(main(arguments))
