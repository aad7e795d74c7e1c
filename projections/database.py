"""Connections to the projection database, each bound to one schema.

Every read model lives in a dedicated PostgreSQL schema (``projections`` unless told otherwise):
tests use one schema each, and ``projections rebuild`` builds a shadow schema and swaps it in by
renaming, which would be unsafe for ``public`` (the embedded schema registry keeps its tables
there).
"""

from __future__ import annotations

import re
from typing import cast

import psycopg
from psycopg import sql

from agentstream.schemas.errors import ConfigurationError, ServiceUnavailableError

__all__ = [
    "DEFAULT_SCHEMA",
    "check_schema_name",
    "connect",
    "offsets_of",
    "schema_exists",
]

DEFAULT_SCHEMA = "projections"
#: Lower-case identifiers only: they are used unquoted in logs and in derived schema names.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")


def check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ConfigurationError(
            f"invalid projection schema name {schema!r}",
            hint="use lower-case letters, digits and underscores (at most 50 characters)",
        )
    return schema


def connect(
    database_url: str, schema: str, *, connect_timeout: float = 5.0, autocommit: bool = False
) -> psycopg.Connection[tuple[object, ...]]:
    """A connection whose unqualified names resolve in ``schema``; timestamps render in UTC."""
    check_schema_name(schema)
    try:
        conn = psycopg.connect(
            database_url, connect_timeout=max(1, int(connect_timeout)), autocommit=True
        )
    except psycopg.OperationalError as exc:
        raise ServiceUnavailableError(
            f"cannot reach PostgreSQL: {_first_line(exc)}",
            hint="check AGENTSTREAM_DATABASE_URL, or start `agentstream dev up`",
        ) from exc
    try:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.execute("SET TIME ZONE 'UTC'")
        conn.autocommit = autocommit
    except BaseException:
        conn.close()
        raise
    return conn


def schema_exists(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> bool:
    found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
    return found is not None


def offsets_of(rows: list[tuple[object, ...]]) -> dict[tuple[str, int], int]:
    """``(topic, partition, next_offset)`` rows as a mapping."""
    return {(cast(str, t), cast(int, p)): cast(int, o) for t, p, o in rows}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
