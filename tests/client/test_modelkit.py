"""ModelKit classes and config/schemas/ agree both ways; models go through publish/subscribe."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
import redis

from synapse import modelkit
from synapse.client import Bus
from synapse.config import RoutingTable, load_table
from tests.client.conftest import serving
from tests.conftest import ROOT, wait_for

SCHEMAS = ROOT / "config" / "schemas"


@pytest.fixture(scope="module")
def table() -> RoutingTable:
    return load_table(ROOT / "config" / "routes.yaml")


def raw_schema(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return found


def required_of(name: str) -> set[str]:
    """Required properties of a schema file, through allOf $refs to siblings."""
    schema = raw_schema(name)
    found = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        if "$ref" in part:
            found |= required_of(
                str((SCHEMAS / name).parent.joinpath(part["$ref"]).relative_to(SCHEMAS))
            )
    return found


def properties_of(name: str) -> dict[str, Any]:
    schema = raw_schema(name)
    found: dict[str, Any] = {}
    for part in schema.get("allOf", []):
        if "$ref" in part:
            ref = (SCHEMAS / name).parent.joinpath(part["$ref"]).relative_to(SCHEMAS)
            found.update(properties_of(str(ref)))
    found.update(schema.get("properties", {}))
    return found


CLASSES = [pytest.param(cls, id=cls.__name__) for cls in modelkit.ALL]


def dump(model: modelkit.SynapseEvent) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def test_every_shipped_topic_has_a_class(table: RoutingTable) -> None:
    """Each schema file the table maps (but the shared metrics) has a ModelKit class."""
    files = {cls.schema_file for cls in modelkit.ALL}
    assert files == {name for name in table.schemas.files if not name.startswith("common/")}


@pytest.mark.parametrize("cls", CLASSES)
def test_class_type_maps_to_its_schema(
    cls: type[modelkit.SynapseEvent], table: RoutingTable
) -> None:
    """The table maps the class's event_type to the class's schema file."""
    found = table.schemas.schema_for(cls.event_type)
    assert found is not None and found.name == cls.schema_file


@pytest.mark.parametrize("cls", CLASSES)
def test_schema_examples_parse_and_round_trip(
    cls: type[modelkit.SynapseEvent], table: RoutingTable
) -> None:
    """Every example in the class's schema file parses into the class and dumps back equal."""
    examples = raw_schema(cls.schema_file).get("examples", [])
    assert examples, f"{cls.schema_file} ships no examples"
    schema = table.schemas.files[cls.schema_file]
    for example in examples:
        assert schema.error(example) is None, example  # the examples are valid
        parsed = cls.model_validate(example)
        assert dump(parsed) == example


@pytest.mark.parametrize("cls", CLASSES)
def test_class_output_validates_against_the_schema(
    cls: type[modelkit.SynapseEvent], table: RoutingTable
) -> None:
    """A minimal and a full instance of every class validate against its schema."""
    schema = table.schemas.files[cls.schema_file]
    for example in raw_schema(cls.schema_file)["examples"]:
        full = cls.model_validate(example)
        assert schema.error(dump(full)) is None
        minimal = cls.model_validate(
            {k: v for k, v in example.items() if k in required_of(cls.schema_file)}
        )
        assert schema.error(dump(minimal)) is None


@pytest.mark.parametrize("cls", CLASSES)
def test_required_fields_and_enums_agree(cls: type[modelkit.SynapseEvent]) -> None:
    """The class requires what the schema requires, and offers the same enum values."""
    generated = cls.model_json_schema()
    assert set(generated.get("required", [])) == required_of(cls.schema_file)
    props = properties_of(cls.schema_file)
    for name, spec in props.items():
        if name == "type":
            continue  # the entry's type field, not a body field of the class
        assert name in cls.model_fields, f"{cls.__name__} lacks {name}"
        if "enum" in spec:
            field = generated["properties"][name]
            options = field.get("enum") or next(
                (o.get("enum") for o in field.get("anyOf", []) if "enum" in o), None
            )
            assert sorted(options or []) == sorted(spec["enum"]), name


@pytest.mark.parametrize("cls", CLASSES)
def test_both_refuse_a_missing_required_field(
    cls: type[modelkit.SynapseEvent], table: RoutingTable
) -> None:
    """Dropping any required field fails both the schema and the class."""
    schema = table.schemas.files[cls.schema_file]
    example = raw_schema(cls.schema_file)["examples"][0]
    for name in required_of(cls.schema_file):
        broken = {k: v for k, v in example.items() if k != name}
        assert schema.error(broken) is not None
        with pytest.raises(pydantic.ValidationError):
            cls.model_validate(broken)


def test_a_class_for_several_types_takes_the_type() -> None:
    """with_type picks the published type; event_type stays the class default."""
    event = modelkit.ModelEvent(model_id="m", version="1").with_type("model.deprecated")
    assert event.type_name == "model.deprecated"
    assert modelkit.ModelEvent(model_id="m", version="1").type_name == "model.updated"


async def test_publish_and_subscribe_models(url: str, r: redis.Redis) -> None:
    """publish(model) writes its type and body; subscribe(model=) hands the handler one."""
    bus = Bus(
        "runtime", url=url, config=ROOT / "config" / "routes.yaml", register=False, block_ms=100
    )
    got: list[modelkit.ModelReadyEvent] = []

    @bus.subscribe("ingress", types="model.ready", model=modelkit.ModelReadyEvent)
    async def load(ready: modelkit.ModelReadyEvent) -> None:
        got.append(ready)

    ready = modelkit.ModelReadyEvent(
        model_id="m1", version="1.0.0", artifact_uri="file:///m1.onnx", framework="onnx",
        stage="production",
    )  # fmt: skip
    async with serving(bus):
        event_id = await bus.publish(ready)
        await wait_for(lambda: len(got) == 1)
    assert dump(got[0]) == dump(ready) and got[0].type_name == "model.ready"
    assert got[0].envelope is not None and got[0].envelope.id == event_id
    [(_, fields)] = r.xrange("ingress")
    assert fields[b"type"] == b"model.ready"
    assert json.loads(fields[b"data"]) == dump(ready)
