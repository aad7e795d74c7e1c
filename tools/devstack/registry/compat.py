"""The schema registry's rules, free of I/O: what a valid Avro schema is, when two are the same,
which changes a compatibility level allows, and the error codes Confluent clients expect.

Identity is the schema's JSON re-dumped with sorted keys and no whitespace, not Avro's parsing
canonical form: that form drops docs and defaults, and two schemas that differ in a default must
not share an id, or a reader fetching the schema by id would lose the default.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import avro.errors
import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from agentstream.schemas.errors import AgentStreamError

AVRO = "AVRO"

_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)


class RegistryError(AgentStreamError):
    """A request the registry refuses; carries the HTTP status and Confluent's error code."""

    http_status = 500
    error_code = 50001


class BadRequestError(RegistryError):
    http_status = 400
    error_code = 400


class SubjectNotFoundError(RegistryError):
    http_status = 404
    error_code = 40401


class VersionNotFoundError(RegistryError):
    http_status = 404
    error_code = 40402


class SchemaNotFoundError(RegistryError):
    http_status = 404
    error_code = 40403


class SubjectSoftDeletedError(RegistryError):
    http_status = 404
    error_code = 40404


class SubjectNotSoftDeletedError(RegistryError):
    http_status = 404
    error_code = 40405


class VersionSoftDeletedError(RegistryError):
    http_status = 404
    error_code = 40406


class VersionNotSoftDeletedError(RegistryError):
    http_status = 404
    error_code = 40407


class SubjectConfigNotFoundError(RegistryError):
    http_status = 404
    error_code = 40408


class IncompatibleSchemaError(RegistryError):
    http_status = 409
    error_code = 409


class InvalidSchemaError(RegistryError):
    http_status = 422
    error_code = 42201


class InvalidVersionError(RegistryError):
    http_status = 422
    error_code = 42202


class InvalidCompatibilityLevelError(RegistryError):
    http_status = 422
    error_code = 42203


class OperationNotPermittedError(RegistryError):
    http_status = 422
    error_code = 42205


class CompatibilityLevel(enum.StrEnum):
    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @classmethod
    def parse(cls, value: object) -> CompatibilityLevel:
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise InvalidCompatibilityLevelError(
            f"Invalid compatibility level {value!r}: use one of {', '.join(cls.__members__)}"
        )

    @property
    def transitive(self) -> bool:
        return self.name.endswith("_TRANSITIVE")

    @property
    def checks_backward(self) -> bool:
        return self.name.startswith(("BACKWARD", "FULL"))

    @property
    def checks_forward(self) -> bool:
        return self.name.startswith(("FORWARD", "FULL"))


DEFAULT_LEVEL = CompatibilityLevel.BACKWARD


@dataclass(frozen=True)
class ParsedSchema:
    """A validated Avro schema: its text as sent, its identity, and the parsed form."""

    text: str
    canonical: str
    avro: Any

    @property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(self.canonical.encode()).digest()


def parse_schema(text: object, schema_type: object = None) -> ParsedSchema:
    """Validate ``text`` as an Avro schema; InvalidSchemaError says why it is not one."""
    if schema_type not in (None, AVRO):
        raise InvalidSchemaError(f"Invalid schema type {schema_type!r}: only AVRO is supported")
    if not isinstance(text, str) or not text.strip():
        raise InvalidSchemaError("Empty schema: the request needs a non-empty 'schema' string")
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise InvalidSchemaError(f"Invalid schema: not JSON ({exc})") from exc
    try:
        parsed = avro.schema.parse(text)
    except (avro.errors.AvroException, ValueError, TypeError, KeyError) as exc:
        raise InvalidSchemaError(f"Invalid schema: {exc}") from exc
    _check_defaults(parsed, set())
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return ParsedSchema(text=text, canonical=canonical, avro=parsed)


def _check_defaults(schema: Any, seen: set[str]) -> None:
    # The avro package accepts any default; a wrong one only fails when a reader needs it,
    # long after the registry has called the change compatible.
    kind = schema.type
    if kind in ("record", "error"):
        if schema.fullname in seen:
            return
        seen.add(schema.fullname)
        for field in schema.fields:
            if field.has_default and not _default_fits(field.type, field.default):
                raise InvalidSchemaError(
                    f"Invalid default for field {schema.fullname}.{field.name}: "
                    f"{json.dumps(field.default)} is not a {_describe(field.type)}"
                )
            _check_defaults(field.type, seen)
    elif kind == "array":
        _check_defaults(schema.items, seen)
    elif kind == "map":
        _check_defaults(schema.values, seen)
    elif kind in ("union", "error_union"):
        for branch in schema.schemas:
            _check_defaults(branch, seen)


def _describe(schema: Any) -> str:
    # The spec ties a union's default to its first branch.
    if schema.type in ("union", "error_union"):
        return f"{schema.schemas[0].type} (a union's default must match its first branch)"
    return str(schema.type)


def _in_range(value: object, bounds: tuple[int, int]) -> bool:
    return (
        isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]
    )


def _default_fits(schema: Any, value: object) -> bool:
    kind = schema.type
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "int":
        return _in_range(value, _INT_RANGE)
    if kind == "long":
        return _in_range(value, _LONG_RANGE)
    if kind in ("float", "double"):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind in ("bytes", "string"):
        return isinstance(value, str)
    if kind == "fixed":
        return isinstance(value, str) and len(value) == schema.size
    if kind == "enum":
        return isinstance(value, str) and value in schema.symbols
    if kind == "array":
        return isinstance(value, list) and all(_default_fits(schema.items, v) for v in value)
    if kind == "map":
        return isinstance(value, dict) and all(
            _default_fits(schema.values, v) for v in value.values()
        )
    if kind in ("record", "error"):
        return isinstance(value, dict) and all(
            _default_fits(f.type, value[f.name]) if f.name in value else f.has_default
            for f in schema.fields
        )
    if kind in ("union", "error_union"):
        return _default_fits(schema.schemas[0], value)
    return False


@dataclass(frozen=True)
class PriorVersion:
    """A live version of the subject the candidate is checked against."""

    version: int
    schema: ParsedSchema


def incompatibilities(
    candidate: ParsedSchema, prior: Sequence[PriorVersion], level: CompatibilityLevel
) -> list[str]:
    """Why ``candidate`` may not follow ``prior`` (oldest first) under ``level``; [] if it may."""
    if level is CompatibilityLevel.NONE or not prior:
        return []
    against = prior if level.transitive else prior[-1:]
    problems: list[str] = []
    for old in reversed(against):
        if level.checks_backward:
            problems += _problems(candidate.avro, old.schema.avro, old.version, "BACKWARD")
        if level.checks_forward:
            problems += _problems(old.schema.avro, candidate.avro, old.version, "FORWARD")
    return problems


def _problems(reader: Any, writer: Any, version: int, direction: str) -> list[str]:
    # A fresh checker each time: it memoizes by object identity.
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]  # avro lacks hints
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    who = (
        f"the new schema cannot read data written with version {version}"
        if direction == "BACKWARD"
        else f"version {version} cannot read data written with the new schema"
    )
    kinds = ", ".join(sorted({i.name.upper() for i in result.incompatibilities}))
    where = ", ".join(sorted(result.locations))
    details = "; ".join(sorted(result.messages))
    return [f"{direction}: {who}: {kinds} at {where}: {details}"]
