"""Loads the ``.avsc`` files, the wire contract's source of truth.

Each file holds one named type (``<namespace>.<Name>.avsc``); event schemas refer to shared types
(Envelope, TokenUsage, ...) by name. :func:`avro_schema` inlines those references so every event
has one self-contained schema to register and to encode with.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "NAMESPACE",
    "avro_schema",
    "avro_schema_str",
    "named_schemas",
]

NAMESPACE = "agentstream.v1"
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@cache
def named_schemas() -> dict[str, dict[str, Any]]:
    """Every named type of the contract, by full name, as written in its file."""
    found: dict[str, dict[str, Any]] = {}
    folder = resources.files("agentstream.schemas").joinpath("avro")
    for entry in folder.iterdir():
        if entry.name.endswith(".avsc"):
            schema = json.loads(entry.read_text(encoding="utf-8"))
            full_name = f"{schema.get('namespace', NAMESPACE)}.{schema['name']}"
            if entry.name != f"{full_name}.avsc":
                raise ValueError(f"{entry.name} must be named {full_name}.avsc")
            found[full_name] = schema
    return found


@cache
def _expanded(full_name: str) -> str:
    schemas = named_schemas()
    seen: set[str] = set()

    def expand(node: Any, namespace: str) -> Any:
        if isinstance(node, str):
            if node in _PRIMITIVES:
                return node
            name = node if "." in node else f"{namespace}.{node}"
            if name in seen:
                return name
            if name not in schemas:
                raise KeyError(f"unknown Avro type {name!r} referenced from {full_name}")
            return expand(schemas[name], namespace)
        if isinstance(node, list):
            return [expand(branch, namespace) for branch in node]
        if isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "enum", "fixed"):
                own_ns = node.get("namespace", namespace)
                seen.add(f"{own_ns}.{node['name']}")
                if kind != "record":
                    return node
                fields = [{**f, "type": expand(f["type"], own_ns)} for f in node["fields"]]
                return {**node, "fields": fields}
            if kind == "array":
                return {**node, "items": expand(node["items"], namespace)}
            if kind == "map":
                return {**node, "values": expand(node["values"], namespace)}
            return {**node, "type": expand(kind, namespace)}
        raise TypeError(f"not an Avro schema node: {node!r}")

    return json.dumps(expand(full_name, NAMESPACE))


def avro_schema(full_name: str) -> dict[str, Any]:
    """The self-contained schema of a named type (a fresh copy; callers may keep it)."""
    schema: dict[str, Any] = json.loads(_expanded(full_name))
    return schema


def avro_schema_str(full_name: str) -> str:
    """The same, as the JSON text a schema registry stores."""
    return _expanded(full_name)
