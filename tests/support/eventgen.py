"""Hypothesis strategies for every record type of the contract, derived from the models."""

from __future__ import annotations

import types
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Union, get_args, get_origin

from annotated_types import Ge, Gt, MinLen
from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from agentstream.schemas.events import ID_PATTERN, AvroRecord

LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1
_MILLIS_RANGE = st.integers(min_value=0, max_value=253402300799999)  # up to year 9999

ids = st.from_regex(ID_PATTERN, fullmatch=True)
timestamps = _MILLIS_RANGE.map(lambda ms: datetime.fromtimestamp(ms / 1000, tz=UTC))


def _int_bounds(metadata: list[Any], avro_int: bool) -> st.SearchStrategy[int]:
    low = -(INT_MAX + 1) if avro_int else -(LONG_MAX + 1)
    high = INT_MAX if avro_int else LONG_MAX
    for item in metadata:
        if isinstance(item, Ge):
            low = max(low, int(item.ge))
        if isinstance(item, Gt):
            low = max(low, int(item.gt) + 1)
    return st.integers(min_value=low, max_value=high)


def _for(annotation: Any, metadata: list[Any], avro_int: bool) -> st.SearchStrategy[Any]:
    if get_origin(annotation) is Annotated:
        inner, *extra = get_args(annotation)
        flat = [
            m for item in extra for m in (item.metadata if isinstance(item, FieldInfo) else [item])
        ]
        return _for(inner, [*metadata, *flat], avro_int)
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return st.none() | _for(members[0], metadata, avro_int)
    if any(getattr(m, "pattern", None) == ID_PATTERN for m in metadata):
        return ids
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return st.sampled_from(list(annotation))
    if annotation is str:
        min_size = max([m.min_length for m in metadata if isinstance(m, MinLen)] or [0])
        return st.text(min_size=min_size, max_size=40)
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return _int_bounds(metadata, avro_int)
    if annotation is bytes:
        return st.binary(max_size=40)
    if annotation is datetime:
        return timestamps
    if get_origin(annotation) is list:
        return st.lists(_for(get_args(annotation)[0], [], avro_int), max_size=3)
    if get_origin(annotation) is dict:
        return st.dictionaries(
            st.text(max_size=10), _for(get_args(annotation)[1], [], avro_int), max_size=3
        )
    if isinstance(annotation, type) and issubclass(annotation, AvroRecord):
        return records(annotation)
    raise TypeError(f"no strategy for {annotation!r}")


def _field(model: type[AvroRecord], name: str, info: FieldInfo) -> st.SearchStrategy[Any]:
    from agentstream.schemas.contract import named_schemas

    avro_fields = {f["name"]: f["type"] for f in named_schemas()[model.avro_name]["fields"]}
    avro_type = avro_fields[name]
    avro_int = avro_type in ("int", ["null", "int"])
    return _for(info.annotation, list(info.metadata), avro_int)


def records(model: type[AvroRecord]) -> st.SearchStrategy[AvroRecord]:
    """Valid instances of ``model``, every field drawn within its Avro and model bounds."""
    fields = {name: _field(model, name, info) for name, info in model.model_fields.items()}
    return st.fixed_dictionaries(fields).map(model.model_validate)
