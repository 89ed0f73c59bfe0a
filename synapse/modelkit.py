"""Typed events for the platform's topics: pydantic v2 classes agreeing with config/schemas/.

    from synapse.modelkit import ModelReadyEvent

    await bus.publish(ModelReadyEvent(model_id="m1", version="1.0.0", stage="production",
                                      artifact_uri="file:///srv/m1.onnx", framework="onnx"))

    @bus.subscribe("model-events", types="model.ready", model=ModelReadyEvent)
    async def load(ready: ModelReadyEvent) -> None:
        print(ready.artifact_uri, ready.envelope.id)   # the Event it came in

One class per shipped topic; each names its schema file and the type ``publish``
gives it (``event_type``; for a class covering several types, ``.with_type(...)``). Unknown
body fields are kept (the schemas allow them). Fields left unset are not written.
``tests/client/test_modelkit.py`` proves the classes and the schema files agree
both ways: every class's output validates against its schema, and every example in
the schema files parses into its class and dumps back unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from synapse.client.event import Event

Probability = Field(default=None, ge=0, le=1)
Framework = Literal["pytorch", "tensorflow", "jax", "onnx", "sklearn", "xgboost", "other"]
Stage = Literal["development", "staging", "production", "archived"]


class SynapseEvent(BaseModel):
    """Base of every ModelKit class: the body of one event type, plus its envelope."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    #: The type ``publish`` writes for this class, and its schema file under config/schemas/.
    event_type: ClassVar[str]
    schema_file: ClassVar[str]
    #: A class covering several types (``*.error``) is given the type by ``with_type``.
    _type: str | None = PrivateAttr(default=None)
    _envelope: Event | None = PrivateAttr(default=None)

    def with_type(self, event_type: str) -> Self:
        """This event published as ``event_type`` (a class covering several types)."""
        self._type = event_type
        return self

    @property
    def type_name(self) -> str:
        """The type ``publish`` writes: the one given at construction, else ``event_type``."""
        return self._type or self.event_type

    @property
    def envelope(self) -> Event | None:
        """The Event this was decoded from (id, source, time, stream...) when subscribed."""
        return self._envelope

    @classmethod
    def from_event(cls, event: Event) -> SynapseEvent:
        """Parse an Event's body; keep the Event as ``envelope``."""
        found = cls.model_validate(event.data)
        found._envelope = event
        found._type = event.type
        return found


class Metrics(BaseModel):
    """Model quality metrics (``common/metrics.json``): any other metric is a number too."""

    model_config = ConfigDict(extra="allow")

    accuracy: float | None = Probability
    precision: float | None = Probability
    recall: float | None = Probability
    f1: float | None = Probability
    loss: float | None = Field(default=None, ge=0)


class ModelEvent(SynapseEvent):
    """A model lifecycle event (``model.updated``, ``model.deprecated``, ...)."""

    event_type: ClassVar[str] = "model.updated"
    schema_file: ClassVar[str] = "model-events/model-event.json"

    model_id: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=64)
    framework: Framework | None = None
    format: str | None = Field(default=None, min_length=1)
    artifact_uri: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9+.-]*://")
    stage: Stage | None = None
    metrics: Metrics | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    tags: list[str] | None = None
    created_at: str | None = None
    reason: str | None = None
    replacement: str | None = None


class ModelReadyEvent(ModelEvent):
    """``model.ready``: a model a runtime can load now, and where from."""

    event_type: ClassVar[str] = "model.ready"
    schema_file: ClassVar[str] = "model-events/model-ready.json"

    artifact_uri: str = Field(pattern=r"^[a-z][a-z0-9+.-]*://")
    framework: Framework
    stage: Stage


class InferenceEvent(SynapseEvent):
    """``inference.requested`` / ``inference.completed`` / ``inference.failed``."""

    event_type: ClassVar[str] = "inference.completed"
    schema_file: ClassVar[str] = "inference-events/inference-event.json"

    request_id: str = Field(min_length=1, max_length=200)
    model_id: str = Field(min_length=1)
    model_version: str | None = None
    latency_ms: float | None = Field(default=None, ge=0)
    inputs: Any = None
    outputs: Any = None
    status: Literal["ok", "error", "timeout"] | None = None
    error: str | None = None
    tokens: int | None = Field(default=None, ge=0)
    timestamp: str | None = None


class TrainingEvent(SynapseEvent):
    """A training run event (``training.started``...): the fields every one has."""

    event_type: ClassVar[str] = "training.started"
    schema_file: ClassVar[str] = "training-events/training-event.json"

    run_id: str = Field(min_length=1)
    model_id: str = Field(min_length=1)
    epoch: int | None = Field(default=None, ge=0)
    step: int | None = Field(default=None, ge=0)
    progress: float | None = Field(default=None, ge=0, le=1)
    metrics: Metrics | None = None
    artifact_uri: str | None = None
    duration_s: float | None = Field(default=None, ge=0)


class TrainingProgressEvent(TrainingEvent):
    """``training.progress``: how far a run is."""

    event_type: ClassVar[str] = "training.progress"


class TrainingCompletedEvent(TrainingEvent):
    """``training.completed``: a run finished (its artifact, final metrics, duration)."""

    event_type: ClassVar[str] = "training.completed"


class PlatformEvent(SynapseEvent):
    """``platform.*``: service lifecycle, deploys, quotas."""

    event_type: ClassVar[str] = "platform.notice"
    schema_file: ClassVar[str] = "platform-events/platform-event.json"

    service: str = Field(min_length=1)
    instance: str | None = None
    message: str | None = None
    severity: Literal["debug", "info", "warning", "error", "critical"] | None = None


class AgiDecisionEvent(SynapseEvent):
    """``agi.decision``: what an agent decided, and why."""

    event_type: ClassVar[str] = "agi.decision"
    schema_file: ClassVar[str] = "agi-decisions/agi-decision.json"

    decision_id: str = Field(min_length=1)
    agent: str = Field(min_length=1)
    action: str = Field(min_length=1)
    confidence: float | None = Probability
    rationale: str | None = None
    inputs: list[Any] | None = None


class ErrorEvent(SynapseEvent):
    """``<service>.error``: an error any producer reports (the type names the producer)."""

    event_type: ClassVar[str] = "service.error"
    schema_file: ClassVar[str] = "error-events/error-event.json"

    service: str = Field(min_length=1)
    message: str
    severity: Literal["warning", "error", "critical", "fatal", "emergency"] | None = None
    stack: str | None = None
    request_id: str | None = None


#: Every ModelKit class, for tooling and the agreement test.
ALL: tuple[type[SynapseEvent], ...] = (
    ModelEvent,
    ModelReadyEvent,
    InferenceEvent,
    TrainingEvent,
    TrainingProgressEvent,
    TrainingCompletedEvent,
    PlatformEvent,
    AgiDecisionEvent,
    ErrorEvent,
)
