"""Checksums of the read models, to tell whether two schemas hold the same tables.

One md5 per table over its rows in primary-key order, each row rendered as text. Wall-clock
columns (``agent_events.projected_at``) are left out: they say when a row was written, which a
rebuild cannot reproduce. The offsets table is compared separately, as positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from agentstream.projections.audit import AUDIT_COLUMNS

#: table -> (primary key columns, checksummed columns; None for every column)
TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {
    "agent_events": (("event_id",), AUDIT_COLUMNS),
    "agents": (("agent_id",), None),
    "runs": (("run_id",), None),
    "tool_calls": (("call_id",), None),
    "approvals": (("call_id",), None),
}


@dataclass(frozen=True)
class TableChecksum:
    rows: int
    md5: str


def table_checksums(
    conn: psycopg.Connection[tuple[object, ...]], schema: str
) -> dict[str, TableChecksum]:
    """The checksum of every read-model table of ``schema``."""
    found = {}
    for table, (key, columns) in TABLES.items():
        selected = (
            sql.SQL("*")
            if columns is None
            else sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        )
        query = sql.SQL(
            "SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY {key})), '')"
            " FROM (SELECT {selected} FROM {schema}.{table}) t"
        ).format(
            key=sql.SQL(", ").join(sql.Identifier(c) for c in key),
            selected=selected,
            schema=sql.Identifier(schema),
            table=sql.Identifier(table),
        )
        row = conn.execute(query).fetchone()
        assert row is not None  # an aggregate always returns a row
        found[table] = TableChecksum(int(str(row[0])), str(row[1]))
    return found
