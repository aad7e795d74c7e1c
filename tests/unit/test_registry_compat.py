"""The registry's rules without a server: schema validity, identity, compatibility levels."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentstream.schemas.errors import AgentStreamError
from agentstream.tools.devstack.registry.compat import (
    CompatibilityLevel,
    InvalidCompatibilityLevelError,
    InvalidSchemaError,
    ParsedSchema,
    PriorVersion,
    RegistryError,
    incompatibilities,
    parse_schema,
)


def record(*fields: dict[str, Any], name: str = "Order") -> ParsedSchema:
    return parse_schema(json.dumps({"type": "record", "name": name, "fields": list(fields)}))


ID = {"name": "id", "type": "string"}
NOTE_REQUIRED = {"name": "note", "type": "string"}
NOTE_DEFAULT = {"name": "note", "type": "string", "default": ""}
ID_AS_INT = {"name": "id", "type": "int"}


def history(*schemas: ParsedSchema) -> list[PriorVersion]:
    return [PriorVersion(n, s) for n, s in enumerate(schemas, start=1)]


def test_identity_ignores_whitespace_and_key_order_but_not_defaults() -> None:
    compact = parse_schema('{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}')
    spaced = parse_schema(
        '{ "fields": [ {"type": "int", "name": "x"} ],\n "name": "A", "type": "record" }'
    )
    with_default = parse_schema(
        '{"type":"record","name":"A","fields":[{"name":"x","type":"int","default":0}]}'
    )
    assert compact.fingerprint == spaced.fingerprint
    assert compact.fingerprint != with_default.fingerprint
    assert spaced.text.startswith("{ ")  # the text as sent is kept for readers


def test_field_order_is_part_of_identity() -> None:
    a = record({"name": "x", "type": "int"}, {"name": "y", "type": "int"})
    b = record({"name": "y", "type": "int"}, {"name": "x", "type": "int"})
    assert a.fingerprint != b.fingerprint


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        '{"type": "record", "name": "R"}',
        '{"type": "nope"}',
        '{"type": "enum", "name": "E", "symbols": ["A", "A"]}',
        '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": "x"}]}',
        '{"type": "record", "name": "R", "fields": '
        '[{"name": "a", "type": ["null", "string"], "default": "x"}]}',
        '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", '
        '"default": 3000000000}]}',
        '{"type": "record", "name": "R", "fields": [{"name": "e", "type": '
        '{"type": "enum", "name": "E", "symbols": ["A"]}, "default": "B"}]}',
    ],
)
def test_invalid_schemas_are_refused_with_42201(text: str) -> None:
    with pytest.raises(InvalidSchemaError) as caught:
        parse_schema(text)
    assert caught.value.http_status == 422
    assert caught.value.error_code == 42201
    assert isinstance(caught.value, AgentStreamError)


def test_valid_defaults_of_every_shape_are_accepted() -> None:
    parse_schema(
        json.dumps(
            {
                "type": "record",
                "name": "R",
                "fields": [
                    {"name": "n", "type": ["null", "string"], "default": None},
                    {"name": "l", "type": "long", "default": 2**40},
                    {"name": "d", "type": "double", "default": 1},
                    {"name": "b", "type": "bytes", "default": "\u00ff"},
                    {
                        "name": "f",
                        "type": {"type": "fixed", "name": "F", "size": 2},
                        "default": "ab",
                    },
                    {"name": "a", "type": {"type": "array", "items": "int"}, "default": [1, 2]},
                    {"name": "m", "type": {"type": "map", "values": "F"}, "default": {"k": "xy"}},
                    {
                        "name": "r",
                        "type": {
                            "type": "record",
                            "name": "Inner",
                            "fields": [
                                {"name": "x", "type": "int"},
                                {"name": "y", "type": "int", "default": 0},
                            ],
                        },
                        "default": {"x": 1},
                    },
                ],
            }
        )
    )


def test_only_avro_is_supported() -> None:
    with pytest.raises(InvalidSchemaError, match="only AVRO"):
        parse_schema('{"type": "object"}', "JSON")


def test_added_field_without_default_breaks_backward() -> None:
    problems = incompatibilities(
        record(ID, NOTE_REQUIRED), history(record(ID)), CompatibilityLevel.BACKWARD
    )
    assert len(problems) == 1
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in problems[0]
    assert "version 1" in problems[0]


def test_added_field_with_default_is_backward_and_forward() -> None:
    old, new = record(ID), record(ID, NOTE_DEFAULT)
    for level in CompatibilityLevel:
        assert incompatibilities(new, history(old), level) == [], level


def test_changed_type_breaks_every_level_but_none() -> None:
    old, new = record(ID), record(ID_AS_INT)
    for level in CompatibilityLevel:
        problems = incompatibilities(new, history(old), level)
        assert (problems == []) == (level is CompatibilityLevel.NONE), level


def test_removed_field_without_default_is_backward_but_not_forward() -> None:
    old, new = record(ID, NOTE_REQUIRED), record(ID)
    assert incompatibilities(new, history(old), CompatibilityLevel.BACKWARD) == []
    forward = incompatibilities(new, history(old), CompatibilityLevel.FORWARD)
    assert forward and forward[0].startswith("FORWARD")
    assert incompatibilities(new, history(old), CompatibilityLevel.FULL) == forward


def test_transitive_levels_reach_every_earlier_version() -> None:
    # v1 has no note; v2 adds it with a default; v3 drops the default. v3 reads v2 data (it has
    # the field) but not v1 data, so only a transitive check catches it.
    v1, v2, v3 = record(ID), record(ID, NOTE_DEFAULT), record(ID, NOTE_REQUIRED)
    prior = history(v1, v2)
    assert incompatibilities(v3, prior, CompatibilityLevel.BACKWARD) == []
    problems = incompatibilities(v3, prior, CompatibilityLevel.BACKWARD_TRANSITIVE)
    assert len(problems) == 1 and "version 1" in problems[0]


def test_renamed_record_is_incompatible() -> None:
    problems = incompatibilities(
        record(ID, name="Other"), history(record(ID)), CompatibilityLevel.BACKWARD
    )
    assert problems and "NAME_MISMATCH" in problems[0]


def test_first_version_has_nothing_to_break() -> None:
    assert incompatibilities(record(ID), [], CompatibilityLevel.FULL_TRANSITIVE) == []


def test_levels_parse_case_insensitively_and_refuse_unknown_ones() -> None:
    assert CompatibilityLevel.parse("full_transitive") is CompatibilityLevel.FULL_TRANSITIVE
    with pytest.raises(InvalidCompatibilityLevelError) as caught:
        CompatibilityLevel.parse("SIDEWAYS")
    assert isinstance(caught.value, RegistryError)
    assert caught.value.error_code == 42203
