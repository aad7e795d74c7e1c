"""One agent as ``agentstream inspect`` shows it: its state, runs, the conversations its runs
belong to (a tree of runs across agents) and timeline. Built from the read models here, or from
the topics by :mod:`agentstream.tools.cli.cmd_inspect`, into the same view.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, cast

from agentstream.processors.core.machine import run_id_of
from agentstream.projections.audit import event_from_payload
from agentstream.projections.queries import (
    Connection,
    ConversationRun,
    agent_conversations,
    agent_facts,
    agent_timeline,
    conversation_tree,
    get_agent,
)
from agentstream.projections.rows import RunStatus
from agentstream.schemas.events import (
    AgentInput,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunOutcome,
)

__all__ = [
    "PENDING_SQL",
    "RUNS_SQL",
    "AgentView",
    "RunView",
    "TimelineItem",
    "TreeRun",
    "conversation_of",
    "conversation_trees",
    "outcome_summary",
    "topic_trees",
    "tree_order",
    "tree_run",
    "trees_of",
    "view_from_database",
]

RUNS_SQL = """
SELECT run_id, status, steps, tool_calls, prompt_tokens + completion_tokens, started_at,
       finished_at,
       coalesce(output, error_class || ': ' || failure_reason,
                'cancelled by ' || cancelled_by || coalesce(': ' || nullif(cancel_reason, ''), ''),
                'handed off to ' || handoff_kind || coalesce(': ' || nullif(handoff_note, ''), '')),
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
class TreeRun:
    """One run of a conversation, as the tree shows it: ``level`` is how many runs started it
    above (0 for the conversation's first), from the parent links."""

    run_id: str
    agent_id: str
    #: None: the default kind (the read models cannot name it)
    kind: str | None
    status: str
    #: how the run that started it did: delegated or handed_off (None for the first)
    relation: str | None
    parent_run_id: str | None
    #: prompt + completion tokens of the run itself, not of the runs it started; None: unknown
    tokens: int | None
    #: from its start to its outcome; None while it runs
    latency_ms: int | None
    started_at: datetime
    result: str | None
    level: int = 0


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
    #: the agent kind serving it (None: the default kind, which the read models cannot name)
    kind: str | None = None
    runs_handed_off: int = 0
    #: each conversation of the runs shown, as a tree: its runs depth first (see tree_order)
    conversations: list[list[TreeRun]] = field(default_factory=list)


def tree_order(runs: Iterable[TreeRun]) -> list[TreeRun]:
    """The runs of one conversation depth first, each after the run that started it, siblings
    in the order they started, with their ``level``. A run whose parent is not among them (not
    known yet) counts as a first one."""
    runs = sorted(runs, key=lambda r: (r.started_at, r.run_id))
    known = {r.run_id for r in runs}
    children: dict[str | None, list[TreeRun]] = {}
    for run in runs:
        parent = run.parent_run_id if run.parent_run_id in known else None
        children.setdefault(parent, []).append(run)
    ordered: list[TreeRun] = []
    stack = [(run, 0) for run in reversed(children.get(None, []))]
    while stack:
        run, level = stack.pop()
        ordered.append(replace(run, level=level))
        stack += [(child, level + 1) for child in reversed(children.get(run.run_id, []))]
    return ordered


def tree_run(row: ConversationRun) -> TreeRun:
    """A run of the read models' conversation query as the tree shows it."""
    return TreeRun(
        row.run_id,
        row.agent_id,
        row.kind,
        row.status,
        row.origin_relation,
        row.parent_run_id,
        row.tokens,
        row.duration_ms,
        row.started_at,
        row.result,
    )


def trees_of(conversations: Iterable[Iterable[TreeRun]]) -> list[list[TreeRun]]:
    """Each conversation as a tree (see :func:`tree_order`), the oldest conversation first."""
    trees = [tree for tree in (tree_order(runs) for runs in conversations) if tree]
    return sorted(trees, key=lambda tree: (tree[0].started_at, tree[0].run_id))


def conversation_trees(
    conn: Connection, agent_id: str, run_id: str | None = None
) -> list[list[TreeRun]]:
    """From the read models, the trees of the agent's conversations (only ``run_id``'s, if
    given)."""
    if run_id is not None:
        found = [conversation_tree(conn, run_id)]
    else:
        found = list(agent_conversations(conn, agent_id).values())
    return trees_of([tree_run(r) for r in rows] for rows in found)


def outcome_summary(outcome: RunOutcome) -> tuple[RunStatus, str]:
    """The run's status and what it ended with, as the read models' queries spell it."""
    if isinstance(outcome, RunCompleted):
        return RunStatus.COMPLETED, outcome.output
    if isinstance(outcome, RunFailed):
        return RunStatus.FAILED, f"{outcome.error_class}: {outcome.reason}"
    if isinstance(outcome, RunCancelled):
        why = f": {outcome.reason}" if outcome.reason else ""
        return RunStatus.CANCELLED, f"cancelled by {outcome.cancelled_by}{why}"
    note = f": {outcome.note}" if outcome.note else ""
    return RunStatus.HANDED_OFF, f"handed off to {outcome.to_kind}{note}"


def conversation_of(event: AgentInput) -> str:
    """The conversation an input's run belongs to: a run another run started joins that run's,
    any other input starts one of its own."""
    return event.envelope.correlation_id if event.origin else event.envelope.event_id


def topic_trees(
    inputs: Iterable[AgentInput],
    outcomes: Iterable[RunOutcome],
    conversations: Collection[str],
    *,
    refused: Collection[str] = (),
    default_kind: str | None = None,
    running_tokens: Mapping[str, int] | None = None,
) -> list[list[TreeRun]]:
    """The trees of ``conversations`` (correlation ids) from the topics: a run for every input
    the processor did not refuse (``refused``: their event ids), ended by its outcome if it has
    one. A run still going has its tokens in ``running_tokens`` if the caller knows them. An
    input that names no kind is of its agent's kind, named by its other inputs, else of
    ``default_kind``."""
    accepted = [e for e in inputs if e.envelope.event_id not in refused]
    # every input the processor accepted for an agent names its kind or none
    kinds = {e.envelope.agent_id: e.kind for e in accepted if e.kind is not None}
    ended: dict[str, RunOutcome] = {}
    for outcome in outcomes:
        run_id = outcome.envelope.run_id
        if run_id is not None and outcome.envelope.correlation_id in conversations:
            ended.setdefault(run_id, outcome)
    found: dict[str, dict[str, TreeRun]] = {}
    for event in accepted:
        conversation = conversation_of(event)
        if conversation not in conversations:
            continue
        kind = event.kind or kinds.get(event.envelope.agent_id, default_kind)
        run = _input_run(event, kind, ended, running_tokens or {})
        found.setdefault(conversation, {}).setdefault(run.run_id, run)
    return trees_of(runs.values() for runs in found.values())


def _input_run(
    event: AgentInput,
    kind: str | None,
    ended: Mapping[str, RunOutcome],
    running_tokens: Mapping[str, int],
) -> TreeRun:
    run_id = run_id_of(event.envelope.event_id)
    origin = event.origin
    outcome = ended.get(run_id)
    if outcome is None:
        status, result, tokens, latency = RunStatus.RUNNING, None, running_tokens.get(run_id), None
        started = event.envelope.occurred_at
    else:
        status, result = outcome_summary(outcome)
        tokens, started = outcome.usage.total, outcome.started_at
        latency = round((outcome.envelope.occurred_at - started).total_seconds() * 1000)
    return TreeRun(
        run_id,
        event.envelope.agent_id,
        kind,
        status,
        origin.relation.value if origin else None,
        origin.run_id if origin else None,
        tokens,
        latency,
        started,
        result,
    )


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
        kind=row.kind,
        runs_handed_off=row.runs_handed_off,
        conversations=conversation_trees(conn, agent_id, run_id),
    )
