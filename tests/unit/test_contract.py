"""Every pydantic model agrees with its .avsc file, field by field: names, order, types,
nullability and defaults. The .avsc files are the source of truth."""

from __future__ import annotations

import types
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Union, get_args, get_origin

import fastavro
import pytest
from pydantic import BaseModel

from agentstream.schemas.contract import avro_schema, named_schemas
from agentstream.schemas.events import NESTED_TYPES, RECORD_TYPES, AvroRecord

ALL_TYPES = {**RECORD_TYPES, **NESTED_TYPES}
PRIMITIVE = {"string": str, "long": int, "int": int, "boolean": bool, "bytes": bytes}


def _strip(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _assert_same_type(avro: Any, annotation: Any, where: str) -> None:
    annotation = _strip(annotation)
    if isinstance(avro, list):
        assert avro[0] == "null" and len(avro) == 2, f"{where}: only [null, T] unions are used"
        assert get_origin(annotation) in (Union, types.UnionType), f"{where}: must be optional"
        members = [a for a in get_args(annotation) if a is not type(None)]
        assert len(members) == 1 and type(None) in get_args(annotation), where
        _assert_same_type(avro[1], members[0], where)
        return
    if avro == "string" and isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return  # a closed set in code, text on the wire (like the reasons)
    if isinstance(avro, str) and avro in PRIMITIVE:
        assert annotation is PRIMITIVE[avro], f"{where}: {avro} vs {annotation}"
        return
    if isinstance(avro, str):
        assert isinstance(annotation, type) and issubclass(annotation, AvroRecord), where
        assert annotation.avro_name == avro, f"{where}: {avro} vs {annotation.avro_name}"
        return
    if avro.get("logicalType") == "timestamp-millis":
        assert annotation is datetime, where
        return
    if avro["type"] == "array":
        assert get_origin(annotation) is list, where
        _assert_same_type(avro["items"], get_args(annotation)[0], f"{where}[]")
        return
    if avro["type"] == "map":
        assert get_origin(annotation) is dict and get_args(annotation)[0] is str, where
        _assert_same_type(avro["values"], get_args(annotation)[1], f"{where}{{}}")
        return
    raise AssertionError(f"{where}: unhandled Avro type {avro!r}")


def test_every_avsc_has_a_model_and_every_model_an_avsc() -> None:
    assert set(named_schemas()) == set(ALL_TYPES)


@pytest.mark.parametrize("name", sorted(ALL_TYPES))
def test_model_mirrors_its_avsc(name: str) -> None:
    schema = named_schemas()[name]
    model: type[BaseModel] = ALL_TYPES[name]
    avro_fields = [f["name"] for f in schema["fields"]]
    assert list(model.model_fields) == avro_fields, "same fields in the same order"
    for field in schema["fields"]:
        info = model.model_fields[field["name"]]
        where = f"{name}.{field['name']}"
        _assert_same_type(field["type"], info.annotation, where)
        if "default" in field:
            assert not info.is_required(), f"{where}: has an Avro default, must be optional"
            model_default = info.get_default(call_default_factory=True)
            assert model_default == field["default"], f"{where}: defaults differ"
        else:
            assert info.is_required(), f"{where}: no Avro default, must be required"


@pytest.mark.parametrize("name", sorted(ALL_TYPES))
def test_expanded_schema_parses_and_is_self_contained(name: str) -> None:
    parsed = fastavro.parse_schema(avro_schema(name), named_schemas={})
    assert parsed["name"] == name
