"""Erasure in the read models: a ``MemoryErased`` removes the erased facts from ``agent_memory``
and replaces their text with ``[erased]`` wherever the agent's rows quote it, the audit log
included, with the state machine's own :func:`~agentstream.processors.core.memory.scrub` (the raw
text, its JSON-escaped spelling, and its spelling in JSON nested in a JSON string).

An erasure reaches the rows of the agent's events that occurred no later than it (``cutoff``):
what the agent is told afterwards is new. The values are read from ``agent_memory`` just before
the facts are deleted and are kept nowhere; the ``MemoryErased`` row says who erased which key.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from agentstream.processors.core.memory import ERASED, scrub
from agentstream.schemas.events import Event, MemoryErased, MemoryRecorded

__all__ = [
    "ERASED",
    "Erasure",
    "erased_values",
    "redact",
    "scrub_value",
]

#: The characters JSON escapes: a run of text without them reads the same at every depth of
#: nesting, so the longest such run of a secret finds every row that may quote it.
_ESCAPED = frozenset('"\\') | frozenset(chr(c) for c in range(0x20))


@dataclass(frozen=True)
class Erasure:
    """The texts one ``MemoryErased`` erased from one agent, and the event time it reaches to."""

    agent_id: str
    secrets: tuple[str, ...]
    cutoff: datetime


def scrub_value(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` (decoded JSON) with every string scrubbed; keys are kept, they name fields."""
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, dict):
        return {k: scrub_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(v, secrets) for v in value]
    return value


def _scrub_payload(payload: dict[str, Any], secrets: Sequence[str]) -> dict[str, Any]:
    """An event's payload scrubbed outside its envelope, which holds ids and times, not text."""
    return {k: v if k == "envelope" else scrub_value(v, secrets) for k, v in payload.items()}


def _probe(secret: str) -> str:
    longest, run = "", list[str]()
    for char in secret:
        if char in _ESCAPED:
            run = []
            continue
        run.append(char)
        if len(run) > len(longest):
            longest = "".join(run)
    return longest


def _probes(secrets: Sequence[str]) -> list[str] | None:
    """Substrings every row quoting a secret contains in its JSON text; None: no such filter."""
    probes = [_probe(s) for s in secrets]
    return None if not all(probes) else probes


_AUDIT_SQL = """
SELECT event_id, payload FROM agent_events
WHERE agent_id = %(agent_id)s AND occurred_at <= %(cutoff)s
  AND (%(probes)s::text[] IS NULL
       OR EXISTS (SELECT 1 FROM unnest(%(probes)s::text[]) p WHERE strpos(payload::text, p) > 0))
"""


@dataclass(frozen=True)
class _Quoting:
    """A read model's columns that may quote what the agent was told."""

    key: str
    texts: tuple[str, ...]
    jsons: tuple[str, ...]
    #: the row's event time, compared with the cutoff (unknown: reached)
    at: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.texts, *self.jsons)

    def select(self, table: str) -> sql.Composed:
        return sql.SQL(
            "SELECT {key}, {columns} FROM {table} WHERE agent_id = %s AND coalesce({at}, %s) <= %s"
        ).format(
            key=sql.Identifier(self.key),
            columns=sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            table=sql.Identifier(table),
            at=sql.SQL(", ").join(map(sql.Identifier, self.at)),
        )

    def update(self, table: str) -> sql.Composed:
        return sql.SQL("UPDATE {table} SET {assignments} WHERE {key} = %s").format(
            table=sql.Identifier(table),
            assignments=sql.SQL(", ").join(
                sql.SQL("{} = %s").format(sql.Identifier(c)) for c in self.columns
            ),
            key=sql.Identifier(self.key),
        )


_READ_MODELS: dict[str, _Quoting] = {
    "runs": _Quoting(
        "run_id",
        ("input_text", "output", "failure_reason", "cancel_reason", "handoff_note"),
        (),
        ("started_at",),
    ),
    "tool_calls": _Quoting(
        "call_id", ("error_message",), ("arguments", "result"), ("requested_at", "finished_at")
    ),
    "approvals": _Quoting("call_id", ("comment",), ("arguments", "decisions"), ("requested_at",)),
}


def redact(conn: psycopg.Connection[tuple[object, ...]], erasure: Erasure) -> int:
    """Scrub the erasure's secrets from the agent's rows, in the caller's transaction; returns
    how many rows changed."""
    secrets = [s for s in erasure.secrets if s]
    if not secrets:
        return 0
    # the audit log's trigger lets this transaction rewrite payloads, and nothing else
    conn.execute("SELECT set_config('agentstream.redacting', 'on', true)")
    params = {
        "agent_id": erasure.agent_id,
        "cutoff": erasure.cutoff,
        "probes": _probes(secrets),
    }
    changed: list[tuple[Any, ...]] = []
    for event_id, payload in conn.execute(_AUDIT_SQL, params).fetchall():
        assert isinstance(payload, dict)
        clean = _scrub_payload(payload, secrets)
        if clean != payload:
            changed.append((Jsonb(clean), event_id))
    with conn.cursor() as cur:
        if changed:
            cur.executemany(
                "UPDATE agent_events SET payload = %s, redacted = true WHERE event_id = %s",
                changed,
            )
        count = len(changed)
        for table, quoting in _READ_MODELS.items():
            count += _redact_table(cur, table, quoting, erasure, secrets)
    return count


def _redact_table(
    cur: psycopg.Cursor[tuple[object, ...]],
    table: str,
    quoting: _Quoting,
    erasure: Erasure,
    secrets: Sequence[str],
) -> int:
    params = (erasure.agent_id, erasure.cutoff, erasure.cutoff)
    updates = []
    for row in cur.execute(quoting.select(table), params).fetchall():
        old = row[1:]
        new = tuple(scrub_value(value, secrets) for value in old)
        if new != old:
            values = [
                Jsonb(v) if c in quoting.jsons and v is not None else v
                for c, v in zip(quoting.columns, new, strict=True)
            ]
            updates.append((*values, row[0]))
    if updates:
        cur.executemany(quoting.update(table), updates)
    return len(updates)


def erased_values(events: Iterable[Event]) -> list[str]:
    """The texts the ``MemoryErased`` events among ``events`` (one agent's, in the order of its
    control partition) erased: for a view built from the topics, which still hold them."""
    facts: dict[str, str] = {}
    erased: list[str] = []
    for event in events:
        if isinstance(event, MemoryRecorded):
            facts[event.key] = event.value
        elif isinstance(event, MemoryErased):
            keys = list(facts) if event.key is None else [event.key]
            erased += [facts.pop(k) for k in keys if k in facts]
    return erased
