"""One agent as ``agentstream inspect`` shows it: its state, runs and timeline. Built from the
read models here, or from the topics by :mod:`agentstream.tools.cli.cmd_inspect`, into the same
view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from agentstream.projections.audit import event_from_payload
from agentstream.projections.queries import Connection, agent_facts, agent_timeline, get_agent
from agentstream.schemas.events import Event

__all__ = [
    "PENDING_SQL",
    "RUNS_SQL",
    "AgentView",
    "RunView",
    "TimelineItem",
    "view_from_database",
]

RUNS_SQL = """
SELECT run_id, status, steps, tool_calls, prompt_tokens + completion_tokens, started_at,
       finished_at,
       coalesce(output, error_class || ': ' || failure_reason,
                'cancelled by ' || cancelled_by || coalesce(': ' || nullif(cancel_reason, ''), '')),
       spec_version
FROM runs WHERE agent_id = %(agent_id)s ORDER BY started_at, run_id
"""

PENDING_SQL = """
SELECT tool, call_id, 'awaiting approval' FROM approvals
WHERE agent_id = %(agent_id)s AND status = 'pending'
UNION ALL
SELECT tool, call_id, 'requested' FROM tool_calls
WHERE agent_id = %(agent_id)s AND status = 'requested'
ORDER BY 2
"""


@dataclass(frozen=True)
class RunView:
    run_id: str
    status: str
    steps: int
    tool_calls: int
    tokens: int
    started_at: datetime | None
    finished_at: datetime | None
    result: str | None
    #: the version of the agent's spec the run was pinned to
    spec_version: int | None = None


@dataclass(frozen=True)
class TimelineItem:
    occurred_at: datetime
    type: str
    run_id: str | None
    event_id: str
    #: the decoded event; None when its stored payload no longer parses (e.g. sanitized)
    event: Event | None
    payload: dict[str, Any]


@dataclass
class AgentView:
    source: str
    agent_id: str
    tenant_id: str
    status: str
    active_run_id: str | None
    runs_completed: int
    runs_failed: int
    prompt_tokens: int
    completion_tokens: int
    updated_at: datetime | None
    #: "tool (call id): status" of calls the active run waits for
    pending: list[str] = field(default_factory=list)
    queued_inputs: int | None = None
    runs: list[RunView] = field(default_factory=list)
    timeline: list[TimelineItem] = field(default_factory=list)
    #: events in the timeline before it was cut to the last ``limit``
    events: int = 0
    runs_cancelled: int = 0
    #: "key = value" of every fact the agent keeps, oldest first
    facts: list[str] = field(default_factory=list)


def view_from_database(
    conn: Connection, schema: str, agent_id: str, *, run_id: str | None, limit: int
) -> AgentView | None:
    """The agent as the read models show it; None if they do not know it."""
    row = get_agent(conn, agent_id)
    if row is None:
        return None
    params = {"agent_id": agent_id}
    runs = [
        RunView(
            cast(str, r[0]),
            cast(str, r[1]),
            cast(int, r[2]),
            cast(int, r[3]),
            cast(int, r[4]),
            cast("datetime | None", r[5]),
            cast("datetime | None", r[6]),
            cast("str | None", r[7]),
            cast("int | None", r[8]),
        )
        for r in conn.execute(RUNS_SQL, params).fetchall()
    ]
    pending = [f"{r[0]} ({r[1]}): {r[2]}" for r in conn.execute(PENDING_SQL, params).fetchall()]
    entries = agent_timeline(conn, agent_id, run_id=run_id, limit=1_000_000)
    timeline = []
    for entry in entries[-limit:]:
        try:
            event: Event | None = event_from_payload(entry.type, entry.payload)
        except (ValueError, KeyError, TypeError):
            event = None
        timeline.append(
            TimelineItem(
                entry.occurred_at, entry.type, entry.run_id, entry.event_id, event, entry.payload
            )
        )
    return AgentView(
        source=f"PostgreSQL read models (schema {schema})",
        agent_id=row.agent_id,
        tenant_id=row.tenant_id,
        status=row.status,
        active_run_id=row.active_run_id,
        runs_completed=row.runs_completed,
        runs_failed=row.runs_failed,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        updated_at=row.updated_at,
        pending=pending,
        runs=[r for r in runs if run_id is None or r.run_id == run_id],
        timeline=timeline,
        events=len(entries),
        runs_cancelled=row.runs_cancelled,
        facts=[f"{f.key} = {f.value}" for f in agent_facts(conn, agent_id)],
    )
