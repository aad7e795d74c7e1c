"""Avro serde in the Confluent wire format: magic byte 0, a 4-byte schema id, Avro binary.

confluent-kafka's ``AvroSerializer``/``AvroDeserializer`` do the work (fastavro underneath);
the pydantic models plug in through their ``to_avro``/``from_avro`` seams. Several event types
share a topic, so subjects follow TopicRecordNameStrategy (``<topic>-<record full name>``) and
the decoder picks the model from the writer schema's name, looked up by the id in the frame.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from functools import cache
from typing import Any

from confluent_kafka.schema_registry import (
    SchemaRegistryClient,
    topic_record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from pydantic import ValidationError

from agentstream.schemas.contract import avro_schema, avro_schema_str
from agentstream.schemas.errors import SerializationError, ServiceUnavailableError
from agentstream.schemas.events import RECORD_TYPES, AvroRecord
from agentstream.schemas.reasons import DeadLetterReason

__all__ = [
    "MAGIC_BYTE",
    "DecodeError",
    "EventSerde",
    "registry_client",
    "schema_id_of",
]

MAGIC_BYTE = 0
_FRAME = struct.Struct(">bI")


class DecodeError(SerializationError):
    """A record's bytes are not a valid agentstream event; ``error_class`` says which way."""

    def __init__(self, error_class: DeadLetterReason, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


def registry_client(url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": url})


def _to_dict(record: AvroRecord, _ctx: SerializationContext) -> dict[str, Any]:
    return record.to_avro()


def schema_id_of(data: bytes) -> int:
    """The schema id in a Confluent-framed value; DecodeError if it is not framed."""
    if len(data) < _FRAME.size + 1:
        raise DecodeError(
            DeadLetterReason.TRUNCATED, f"{len(data)} bytes is too short for a framed Avro value"
        )
    magic, schema_id = _FRAME.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise DecodeError(
            DeadLetterReason.WRONG_MAGIC_BYTE, f"magic byte {magic}, expected {MAGIC_BYTE}"
        )
    return int(schema_id)


class EventSerde:
    """Encodes and decodes every record type of the contract, for any topic."""

    def __init__(self, client: SchemaRegistryClient, *, auto_register: bool = True) -> None:
        self.client = client
        self._auto_register = auto_register
        self._serializers: dict[type[AvroRecord], AvroSerializer] = {}
        self._deserializers: dict[type[AvroRecord], AvroDeserializer] = {}
        self._types_by_id: dict[int, type[AvroRecord]] = {}
        self._ids: dict[tuple[str, type[AvroRecord]], int] = {}
        self._resolution: dict[int, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    def encode(self, topic: str, record: AvroRecord) -> bytes:
        """Framed Avro. The first record of a type on a topic goes through confluent-kafka's
        serializer, which registers (or looks up) its schema; after that the same bytes are
        written straight with fastavro, skipping the serializer's per-record rule machinery."""
        schema_id = self._ids.get((topic, type(record)))
        if schema_id is None:
            data = self._encode_via_serializer(topic, record)
            self._ids[(topic, type(record))] = schema_id_of(data)
            return data
        out = io.BytesIO()
        out.write(_FRAME.pack(MAGIC_BYTE, schema_id))
        try:
            schemaless_writer(out, _parsed(record.avro_name), record.to_avro())
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"cannot encode {record.avro_name}: {exc}") from exc
        return out.getvalue()

    def _encode_via_serializer(self, topic: str, record: AvroRecord) -> bytes:
        serializer = self._serializer(type(record))
        try:
            data = serializer(record, SerializationContext(topic, MessageField.VALUE))
        except SchemaRegistryError as exc:
            raise _registry_failure(exc) from exc
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"cannot encode {record.avro_name}: {exc}") from exc
        if data is None:  # only for a None record, which the signature excludes
            raise SerializationError("the serializer returned nothing")
        return data

    def decode(self, topic: str, data: bytes | None) -> AvroRecord:
        """The record in ``data``; DecodeError (with an error_class) for anything else."""
        if data is None:
            raise DecodeError(DeadLetterReason.MISSING_VALUE, "the record has no value (tombstone)")
        record_type = self.record_type_of(data)
        schemas = self._resolution.get(schema_id_of(data))
        try:
            if schemas is None:
                # First value with this schema id: confluent-kafka's deserializer resolves it,
                # and the parsed writer schema is kept for the fast path.
                record = self._deserializer(record_type)(
                    data, SerializationContext(topic, MessageField.VALUE)
                )
                self._learn_resolution(schema_id_of(data), record_type)
            else:
                writer, reader = schemas
                payload = io.BytesIO(memoryview(data)[_FRAME.size :])
                decoded = schemaless_reader(payload, writer, reader)
                if not isinstance(decoded, dict):
                    raise DecodeError(DeadLetterReason.UNDECODABLE, "the value is not a record")
                record = record_type.from_avro(decoded)
        except ValidationError as exc:
            raise DecodeError(DeadLetterReason.INVALID_EVENT, _first_error(exc)) from exc
        except SchemaRegistryError as exc:
            raise _registry_failure(exc) from exc
        except DecodeError:
            raise
        except Exception as exc:  # fastavro raises bare EOFError/ValueError/... on bad bytes
            raise DecodeError(DeadLetterReason.UNDECODABLE, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(record, record_type):
            raise DecodeError(DeadLetterReason.UNDECODABLE, "the value decoded to nothing")
        return record

    def record_type_of(self, data: bytes) -> type[AvroRecord]:
        schema_id = schema_id_of(data)
        known = self._types_by_id.get(schema_id)
        if known is not None:
            return known
        try:
            schema = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise DecodeError(
                    DeadLetterReason.UNKNOWN_SCHEMA_ID, f"schema id {schema_id} is not registered"
                ) from exc
            raise _registry_failure(exc) from exc
        try:
            parsed = json.loads(schema.schema_str or "")
            name = f"{parsed.get('namespace', '')}.{parsed['name']}".lstrip(".")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DecodeError(
                DeadLetterReason.UNKNOWN_RECORD_TYPE, f"schema {schema_id} is not a record"
            ) from exc
        record_type = RECORD_TYPES.get(name)
        if record_type is None:
            raise DecodeError(
                DeadLetterReason.UNKNOWN_RECORD_TYPE, f"schema {schema_id} is {name}, not ours"
            )
        self._types_by_id[schema_id] = record_type
        return record_type

    def _learn_resolution(self, schema_id: int, record_type: type[AvroRecord]) -> None:
        """Parse the writer schema once; the reader schema is only needed when they differ."""
        registered = self.client.get_schema(schema_id)
        writer_json = json.loads(registered.schema_str or "")
        writer = parse_schema(writer_json, named_schemas={})
        same = _canonical(writer_json) == _canonical(avro_schema(record_type.avro_name))
        self._resolution[schema_id] = (writer, None if same else _parsed(record_type.avro_name))

    def _serializer(self, record_type: type[AvroRecord]) -> AvroSerializer:
        serializer = self._serializers.get(record_type)
        if serializer is None:
            with self._lock:
                serializer = AvroSerializer(
                    self.client,
                    avro_schema_str(record_type.avro_name),
                    _to_dict,
                    conf={
                        "auto.register.schemas": self._auto_register,
                        "subject.name.strategy": topic_record_subject_name_strategy,
                    },
                )
                self._serializers[record_type] = serializer
        return serializer

    def _deserializer(self, record_type: type[AvroRecord]) -> AvroDeserializer:
        deserializer = self._deserializers.get(record_type)
        if deserializer is None:

            def from_dict(data: dict[str, Any], _ctx: SerializationContext) -> AvroRecord:
                return record_type.from_avro(data)

            with self._lock:
                deserializer = AvroDeserializer(
                    self.client,
                    avro_schema_str(record_type.avro_name),
                    from_dict,
                    conf={"subject.name.strategy": topic_record_subject_name_strategy},
                )
                self._deserializers[record_type] = deserializer
        return deserializer


@cache
def _parsed(full_name: str) -> Any:
    return parse_schema(avro_schema(full_name), named_schemas={})


def _canonical(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']} ({exc.error_count()} error(s))"


def _registry_failure(exc: SchemaRegistryError) -> SerializationError | ServiceUnavailableError:
    if exc.http_status_code in (-1, 500, 502, 503, 504):
        return ServiceUnavailableError(f"schema registry unavailable: {exc}")
    return SerializationError(f"schema registry refused: {exc}")
