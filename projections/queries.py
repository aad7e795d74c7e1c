"""Read-model queries: an agent's timeline, pending approvals, runs by status, the runs of a
conversation across agents, and the state of an agent at a point in time, folded from its audit
events by the processor's own state machine.

Every function takes a connection from :func:`agentstream.projections.database.connect`, whose
search path selects the projection schema. The same SQL is documented in projections/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg.rows import class_row

from agentstream.processors.core.machine import fold
from agentstream.processors.core.ordering import causal_order
from agentstream.processors.core.spec import AgentSpec, Catalog, SpecVersions
from agentstream.processors.core.state import AgentState
from agentstream.processors.replay.order import Queued, processor_order
from agentstream.projections.audit import event_from_payload
from agentstream.projections.database import offsets_of
from agentstream.projections.rows import RunStatus
from agentstream.projections.writer import PROJECTION
from agentstream.schemas.events import Event
from agentstream.streams.topics import (
    APPROVAL_DECISIONS,
    APPROVAL_REQUESTS,
    CONTROL,
    INPUTS,
    MODEL_CALLS,
    MODEL_RESULTS,
    OUTCOMES,
    TIMERS,
    TOOL_CALLS,
    TOOL_RESULTS,
    TopicSpec,
)

__all__ = [
    "AGENT_CONVERSATIONS_SQL",
    "AGENT_SQL",
    "CAUSED_SQL",
    "CONVERSATION_SQL",
    "FACTS_SQL",
    "FOLD_EVENTS_SQL",
    "PENDING_APPROVALS_SQL",
    "RUNS_BY_STATUS_SQL",
    "SENT_SQL",
    "TIMELINE_SQL",
    "AgentRow",
    "Connection",
    "ConversationRun",
    "FactRow",
    "PendingApproval",
    "Position",
    "RunRow",
    "RunStatus",
    "TimelineEntry",
    "agent_conversations",
    "agent_facts",
    "agent_state_at",
    "agent_timeline",
    "conversation_tree",
    "fold_events",
    "get_agent",
    "pending_approvals",
    "projection_position",
    "run_input",
    "runs_by_status",
]

Connection = psycopg.Connection[tuple[object, ...]]
#: Next offset per (physical topic, partition), as stored in ``projection_offsets``.
Position = Mapping[tuple[str, int], int]
#: what folding an agent needs: its spec, its versions, or every kind served
Specs = AgentSpec | SpecVersions | Catalog

#: What the processor consumes, in its subscription order (ties in event time follow it).
_PROCESSOR_INPUTS: tuple[TopicSpec, ...] = (
    INPUTS,
    MODEL_RESULTS,
    TOOL_RESULTS,
    APPROVAL_DECISIONS,
    CONTROL,
)
_INPUT_TYPES = sorted({t.__name__ for spec in _PROCESSOR_INPUTS for t in spec.value_types})
_OUTPUT_TYPES = sorted(
    {
        t.__name__
        for spec in (MODEL_CALLS, TOOL_CALLS, APPROVAL_REQUESTS, OUTCOMES, TIMERS)
        for t in spec.value_types
    }
    # the ``remember`` tool's facts go out on the control topic, caused by the model's answer
    | {"MemoryRecorded"}
)


@dataclass(frozen=True)
class AgentRow:
    agent_id: str
    tenant_id: str
    status: str
    active_run_id: str | None
    events: int
    runs_completed: int
    runs_failed: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    first_event_at: datetime
    updated_at: datetime
    paused: bool
    runs_cancelled: int
    #: None: the default kind of the processor that served it
    kind: str | None = None
    runs_handed_off: int = 0


@dataclass(frozen=True)
class TimelineEntry:
    event_id: str
    type: str
    occurred_at: datetime
    run_id: str | None
    call_id: str | None
    causation_id: str | None
    source: str
    topic: str
    partition: int
    offset: int
    payload: dict[str, Any]


@dataclass(frozen=True)
class PendingApproval:
    call_id: str
    agent_id: str
    tenant_id: str
    run_id: str | None
    tool: str | None
    arguments: Any
    arguments_hash: str | None
    requested_at: datetime | None
    deadline: datetime | None


@dataclass(frozen=True)
class RunRow:
    run_id: str
    agent_id: str
    tenant_id: str
    status: str
    input_text: str | None
    output: str | None
    failure_reason: str | None
    error_class: str | None
    steps: int
    tool_calls: int
    prompt_tokens: int
    completion_tokens: int
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    cancelled_by: str | None
    cancel_reason: str | None
    spec_version: int | None
    spec_hash: str | None
    kind: str | None = None
    correlation_id: str | None = None
    origin_relation: str | None = None
    parent_agent_id: str | None = None
    parent_run_id: str | None = None
    handoff_kind: str | None = None
    handoff_note: str | None = None


@dataclass(frozen=True)
class ConversationRun:
    """One run of a conversation, with the run that started it (None for the first)."""

    run_id: str
    agent_id: str
    kind: str | None
    status: str
    origin_relation: str | None
    parent_agent_id: str | None
    parent_run_id: str | None
    #: the delegating call a delegated run answers
    call_id: str | None
    depth: int
    correlation_id: str
    input_event_id: str | None
    input_text: str | None
    #: what it ended with: its output, why it failed, who cancelled it, or whom it handed off to
    result: str | None
    steps: int
    prompt_tokens: int
    completion_tokens: int
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class FactRow:
    key: str
    value: str
    recorded_at: datetime
    recorded_by: str


FACTS_SQL = """
SELECT key, value, recorded_at, recorded_by FROM agent_memory
WHERE agent_id = %(agent_id)s ORDER BY recorded_at, key
"""

AGENT_SQL = """
SELECT agent_id, tenant_id, status, active_run_id, events, runs_completed, runs_failed,
       prompt_tokens, completion_tokens, total_tokens, first_event_at, updated_at, paused,
       runs_cancelled, kind, runs_handed_off
FROM agents WHERE agent_id = %(agent_id)s
"""

# A run's events and the input that started it (an input belongs to no run yet).
TIMELINE_SQL = """
SELECT event_id, type, occurred_at, run_id, call_id, causation_id, source, topic, "partition",
       "offset", payload
FROM agent_events
WHERE agent_id = %(agent_id)s
  AND (%(run_id)s::text IS NULL OR run_id = %(run_id)s
       OR event_id = (SELECT input_event_id FROM run_inputs WHERE run_id = %(run_id)s))
ORDER BY occurred_at, topic, "partition", "offset"
LIMIT %(limit)s
"""

PENDING_APPROVALS_SQL = """
SELECT call_id, agent_id, tenant_id, run_id, tool, arguments, arguments_hash, requested_at,
       deadline
FROM approvals
WHERE status = 'pending' AND requested_at IS NOT NULL
  AND (%(tenant_id)s::text IS NULL OR tenant_id = %(tenant_id)s)
ORDER BY requested_at, call_id
LIMIT %(limit)s
"""

# An agent has one kind: a run whose input named none is of the kind its agent's other runs
# named, when one did.
RUNS_BY_STATUS_SQL = """
SELECT r.run_id, r.agent_id, r.tenant_id, r.status, r.input_text, r.output, r.failure_reason,
       r.error_class, r.steps, r.tool_calls, r.prompt_tokens, r.completion_tokens, r.started_at,
       r.finished_at, r.duration_ms, r.cancelled_by, r.cancel_reason, r.spec_version,
       r.spec_hash, coalesce(r.kind, a.kind) AS kind, r.correlation_id, r.origin_relation,
       r.parent_agent_id, r.parent_run_id, r.handoff_kind, r.handoff_note
FROM runs r LEFT JOIN agents a ON a.agent_id = r.agent_id
WHERE r.status = %(status)s
  AND (%(agent_id)s::text IS NULL OR r.agent_id = %(agent_id)s)
  AND (%(tenant_id)s::text IS NULL OR r.tenant_id = %(tenant_id)s)
ORDER BY r.started_at DESC, r.run_id
LIMIT %(limit)s
"""

_CONVERSATION_SELECT = """
SELECT r.run_id, r.agent_id, coalesce(r.kind, a.kind) AS kind, r.status, r.origin_relation,
       r.parent_agent_id, r.parent_run_id, r.call_id, r.depth, r.correlation_id,
       r.input_event_id, r.input_text,
       coalesce(r.output, r.error_class || ': ' || r.failure_reason,
                'cancelled by ' || r.cancelled_by
                    || coalesce(': ' || nullif(r.cancel_reason, ''), ''),
                'handed off to ' || r.handoff_kind
                    || coalesce(': ' || nullif(r.handoff_note, ''), '')
       ) AS result,
       r.steps, r.prompt_tokens, r.completion_tokens, r.started_at, r.finished_at, r.duration_ms
FROM runs r LEFT JOIN agents a ON a.agent_id = r.agent_id
"""
#: Every run of the conversation ``run_id`` belongs to (the runs sharing its correlation id),
#: each with the run that started it; in the order they started.
CONVERSATION_SQL = (
    _CONVERSATION_SELECT
    + """WHERE r.correlation_id = (SELECT correlation_id FROM runs WHERE run_id = %(run_id)s)
ORDER BY r.started_at, r.run_id
"""
)
#: Every run of every conversation an agent's runs belong to, conversation by conversation.
AGENT_CONVERSATIONS_SQL = (
    _CONVERSATION_SELECT
    + """WHERE r.correlation_id IN (
    SELECT correlation_id FROM runs WHERE agent_id = %(agent_id)s AND correlation_id IS NOT NULL
)
ORDER BY r.correlation_id, r.started_at, r.run_id
"""
)

CAUSED_SQL = """
SELECT causation_id, event_id FROM agent_events
WHERE agent_id = %(agent_id)s AND type = ANY(%(types)s) AND causation_id IS NOT NULL
"""

#: What the agent's inputs caused the processor to send other agents: keyed to them, so stored
#: under their ids (the literal types let PostgreSQL use the partial index of 0005).
SENT_SQL = """
SELECT causation_id, event_id FROM agent_events
WHERE causation_id = ANY(%(causes)s) AND agent_id <> %(agent_id)s
  AND type IN ('AgentInput', 'DelegationReturned', 'RunCancelRequested')
  AND source = 'processor'
"""

FOLD_EVENTS_SQL = """
SELECT topic, "partition", "offset", occurred_at, type, payload
FROM agent_events
WHERE agent_id = %(agent_id)s AND type = ANY(%(types)s)
  AND (%(at)s::timestamptz IS NULL OR occurred_at <= %(at)s)
ORDER BY topic, "partition", "offset"
"""


def get_agent(conn: Connection, agent_id: str) -> AgentRow | None:
    with conn.cursor(row_factory=class_row(AgentRow)) as cur:
        return cur.execute(AGENT_SQL, {"agent_id": agent_id}).fetchone()


def agent_facts(conn: Connection, agent_id: str) -> list[FactRow]:
    """The facts the agent keeps, oldest first."""
    with conn.cursor(row_factory=class_row(FactRow)) as cur:
        return cur.execute(FACTS_SQL, {"agent_id": agent_id}).fetchall()


def agent_timeline(
    conn: Connection, agent_id: str, *, run_id: str | None = None, limit: int = 10_000
) -> list[TimelineEntry]:
    """Every audit event of an agent (or of one of its runs, with the input that started it) in
    event time, causes before their effects."""
    with conn.cursor(row_factory=class_row(TimelineEntry)) as cur:
        params = {"agent_id": agent_id, "run_id": run_id, "limit": limit}
        rows = cur.execute(TIMELINE_SQL, params).fetchall()
    return causal_order(rows, event_id=lambda r: r.event_id, cause=lambda r: r.causation_id)


def pending_approvals(
    conn: Connection, *, tenant_id: str | None = None, limit: int = 100
) -> list[PendingApproval]:
    """The approvals inbox: requests nobody decided yet, oldest first."""
    with conn.cursor(row_factory=class_row(PendingApproval)) as cur:
        params = {"tenant_id": tenant_id, "limit": limit}
        return cur.execute(PENDING_APPROVALS_SQL, params).fetchall()


def runs_by_status(
    conn: Connection,
    status: RunStatus,
    *,
    agent_id: str | None = None,
    tenant_id: str | None = None,
    limit: int = 100,
) -> list[RunRow]:
    """Runs with ``status``, newest first."""
    with conn.cursor(row_factory=class_row(RunRow)) as cur:
        params = {"status": status, "agent_id": agent_id, "tenant_id": tenant_id, "limit": limit}
        return cur.execute(RUNS_BY_STATUS_SQL, params).fetchall()


def conversation_tree(conn: Connection, run_id: str) -> list[ConversationRun]:
    """Every run of the conversation ``run_id`` belongs to, across agents, in the order they
    started; ``parent_run_id`` links each to the run that delegated or handed off to it. Empty
    while the read models do not know the run's conversation (none of its requests projected
    yet)."""
    with conn.cursor(row_factory=class_row(ConversationRun)) as cur:
        return cur.execute(CONVERSATION_SQL, {"run_id": run_id}).fetchall()


def run_input(conn: Connection, run_id: str) -> str | None:
    """The event id of the input that starts (or started) ``run_id``, if it was projected."""
    row = conn.execute(
        "SELECT input_event_id FROM run_inputs WHERE run_id = %(run_id)s", {"run_id": run_id}
    ).fetchone()
    return None if row is None else cast(str, row[0])


def agent_conversations(conn: Connection, agent_id: str) -> dict[str, list[ConversationRun]]:
    """The runs of every conversation the agent took part in, by correlation id."""
    with conn.cursor(row_factory=class_row(ConversationRun)) as cur:
        rows = cur.execute(AGENT_CONVERSATIONS_SQL, {"agent_id": agent_id}).fetchall()
    found: dict[str, list[ConversationRun]] = {}
    for row in rows:
        found.setdefault(row.correlation_id, []).append(row)
    return found


def projection_position(
    conn: Connection, projection: str = PROJECTION
) -> dict[tuple[str, int], int]:
    """Where the projection stands: the next offset of every topic partition it consumed."""
    rows = conn.execute(
        'SELECT topic, "partition", next_offset FROM projection_offsets WHERE projection = %s',
        (projection,),
    ).fetchall()
    return offsets_of(rows)


def fold_events(
    conn: Connection,
    agent_id: str,
    spec: Specs,
    *,
    at: datetime | None = None,
    position: Position | None = None,
) -> list[Event]:
    """The agent's processor inputs up to a point in time, in the order the processor applied
    them (see :mod:`agentstream.processors.replay.order`). ``at`` keeps events that occurred no
    later than it; ``position`` keeps events below those offsets (a partition it does not name
    contributes nothing)."""
    streams: dict[tuple[str, int], list[Queued]] = {}
    params = {"agent_id": agent_id, "types": _INPUT_TYPES, "at": at}
    for topic, partition, offset, occurred_at, type_name, payload in conn.execute(
        FOLD_EVENTS_SQL, params
    ).fetchall():
        key = (cast(str, topic), cast(int, partition))
        if position is not None and cast(int, offset) >= position.get(key, 0):
            continue
        assert isinstance(occurred_at, datetime) and isinstance(payload, dict)
        event = event_from_payload(cast(str, type_name), payload)
        streams.setdefault(key, []).append(Queued(occurred_at, _rank(key[0]), event))
    # Outputs are facts about the order whatever the cut: all of them are used.
    caused: dict[str, set[str]] = {}
    outputs = conn.execute(CAUSED_SQL, {"agent_id": agent_id, "types": _OUTPUT_TYPES}).fetchall()
    causes = [q.event.envelope.event_id for stream in streams.values() for q in stream]
    sent = conn.execute(SENT_SQL, {"agent_id": agent_id, "causes": causes}).fetchall()
    for causation_id, event_id in (*outputs, *sent):
        caused.setdefault(cast(str, causation_id), set()).add(cast(str, event_id))
    frozen = {cause: frozenset(ids) for cause, ids in caused.items()}
    return processor_order([streams[k] for k in sorted(streams)], frozen, spec)


def agent_state_at(
    conn: Connection,
    agent_id: str,
    spec: Specs,
    *,
    at: datetime | None = None,
    position: Position | None = None,
) -> AgentState | None:
    """The agent's state at a point in time (see :func:`fold_events`), computed by the same pure
    ``fold`` the processor uses; None if it had no input by then."""
    return fold(fold_events(conn, agent_id, spec, at=at, position=position), spec)


def _rank(topic: str) -> int:
    for rank, spec in enumerate(_PROCESSOR_INPUTS):
        if topic.endswith(spec.name):
            return rank
    return len(_PROCESSOR_INPUTS)
