"""Pure mapping from agent events to read-model rows: no I/O, no clock.

A batch of events becomes one *delta* per touched agent, run, tool call and approval. A delta
folds the batch's events in consumption order; the SQL upserts (:mod:`.statements`) merge a delta
into the stored row with the same rule as :meth:`merge` here. Every rule is associative and only
"first one wins" for values that come from a single topic partition (whose order is fixed), so the
tables do not depend on where batches begin and end, nor on how the broker interleaves topics.
``tests/unit/test_projection_rows.py`` checks exactly that.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from agentstream.processors.core.machine import run_id_of
from agentstream.projections.audit import SourcedEvent
from agentstream.projections.sanitize import jsonb_text
from agentstream.schemas.events import (
    AgentInput,
    AgentPaused,
    AgentResumed,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    CallbackCompleted,
    DelegationReturned,
    Event,
    MemoryErased,
    MemoryRecorded,
    ModelCallCompleted,
    ModelCallRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunHandedOff,
    RunRelation,
    TimerFired,
    TimerPurpose,
    TimerSet,
    ToolCallCompleted,
    ToolCallFailed,
    ToolCallRequested,
    ToolCallWaiting,
)

__all__ = [
    "AGENT_COLUMNS",
    "AGENT_ROW",
    "APPROVAL_COLUMNS",
    "APPROVAL_ROW",
    "FACT_COLUMNS",
    "FACT_ROW",
    "INPUT_COLUMNS",
    "INPUT_ROW",
    "RUN_COLUMNS",
    "RUN_ROW",
    "TIMER_COLUMNS",
    "TIMER_ROW",
    "TOOL_CALL_COLUMNS",
    "TOOL_CALL_ROW",
    "WAIT_COLUMNS",
    "WAIT_ROW",
    "AgentDelta",
    "ApprovalDelta",
    "BatchDeltas",
    "BatchRows",
    "DecisionKind",
    "Erase",
    "FactDelta",
    "InputDelta",
    "MemoryDelta",
    "RunDelta",
    "RunStatus",
    "TableRow",
    "TimerDelta",
    "ToolCallDelta",
    "WaitDelta",
    "decision_record",
    "first_of_each_event",
    "tool_call_status",
]


class RunStatus(StrEnum):
    """A run's status in the read models: running until its outcome says how it ended."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    HANDED_OFF = "handed_off"


# isinstance() with these tuples: a union written inline (A | B) is built anew on every call,
# which made isinstance the most expensive thing in folding a batch.
_OUTCOMES = (RunCompleted, RunFailed, RunCancelled, RunHandedOff)
_MACHINE_OUTPUTS = (
    ModelCallRequested,
    ToolCallRequested,
    ApprovalRequested,
    RunCompleted,
    RunFailed,
    RunCancelled,
    RunHandedOff,
    TimerSet,
)
_SPEC_CARRIERS = (ModelCallRequested, RunCompleted, RunFailed, RunCancelled, RunHandedOff)
_PAUSES = (AgentPaused, AgentResumed)
_MEMORY_EVENTS = (MemoryRecorded, MemoryErased)
_TIMER_EVENTS = (TimerSet, TimerFired)
#: events that may change an agent's status without touching its runs or approvals
_STEERING = (
    AgentPaused,
    AgentResumed,
    ToolCallWaiting,
    CallbackCompleted,
    TimerSet,
    TimerFired,
    DelegationReturned,
)
_Outcome = RunCompleted | RunFailed | RunCancelled | RunHandedOff
_CALL_REQUESTS = (ApprovalRequested, ToolCallRequested)
_TOOL_EVENTS = (ApprovalRequested, ToolCallRequested, ToolCallCompleted, ToolCallFailed)
_APPROVAL_EVENTS = (ApprovalRequested, ApprovalGranted, ApprovalDenied, ApprovalExpired)
DecisionKind = Literal["granted", "denied", "expired"]


class TableRow:
    """A read model's columns and rows, from its delta: the delta's fields in order, then the
    columns it computes (properties), JSON columns encoded. The columns are named once, there."""

    def __init__(self, delta: type, *computed: str, json_columns: tuple[str, ...] = ()) -> None:
        self.columns: tuple[str, ...] = (*(f.name for f in dataclasses.fields(delta)), *computed)
        self._values = operator.attrgetter(*self.columns)
        self._json = tuple(i for i, c in enumerate(self.columns) if c in json_columns)

    def __call__(self, delta: object) -> tuple[Any, ...]:
        values: tuple[Any, ...] = self._values(delta)
        if not self._json:
            return values
        encoded = list(values)
        for index in self._json:
            encoded[index] = json.dumps(encoded[index])
        return tuple(encoded)


# -- agents ------------------------------------------------------------------------------------


@dataclass(slots=True)
class AgentDelta:
    """Counters of one agent: sums over events, the event-time range. Status and active run are
    recomputed from ``runs`` and ``approvals`` after each batch."""

    agent_id: str
    tenant_id: str
    first_event_at: datetime
    updated_at: datetime
    events: int = 0
    runs_completed: int = 0
    runs_failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    runs_cancelled: int = 0
    #: the batch's last pause or resume (they share the control partition); None: neither
    paused: bool | None = None
    runs_handed_off: int = 0

    @classmethod
    def start(cls, event: Event) -> AgentDelta:
        env = event.envelope
        return cls(env.agent_id, env.tenant_id, env.occurred_at, env.occurred_at)

    def add(self, event: Event) -> None:
        at = event.envelope.occurred_at
        self.events += 1
        self.first_event_at = min(self.first_event_at, at)
        self.updated_at = max(self.updated_at, at)
        if isinstance(event, _OUTCOMES):
            self._count(event)
        elif isinstance(event, _PAUSES):
            self.paused = isinstance(event, AgentPaused)

    def _count(self, outcome: _Outcome) -> None:
        if isinstance(outcome, RunCompleted):
            self.runs_completed += 1
        elif isinstance(outcome, RunFailed):
            self.runs_failed += 1
        elif isinstance(outcome, RunCancelled):
            self.runs_cancelled += 1
        else:
            self.runs_handed_off += 1
        self.prompt_tokens += outcome.usage.prompt_tokens
        self.completion_tokens += outcome.usage.completion_tokens

    def merge(self, later: AgentDelta) -> AgentDelta:
        return AgentDelta(
            self.agent_id,
            self.tenant_id,
            min(self.first_event_at, later.first_event_at),
            max(self.updated_at, later.updated_at),
            self.events + later.events,
            self.runs_completed + later.runs_completed,
            self.runs_failed + later.runs_failed,
            self.prompt_tokens + later.prompt_tokens,
            self.completion_tokens + later.completion_tokens,
            self.runs_cancelled + later.runs_cancelled,
            later.paused if later.paused is not None else self.paused,
            self.runs_handed_off + later.runs_handed_off,
        )

    def row(self) -> tuple[Any, ...]:
        return AGENT_ROW(self)


AGENT_ROW = TableRow(AgentDelta)
AGENT_COLUMNS = AGENT_ROW.columns


# -- runs --------------------------------------------------------------------------------------


@dataclass(slots=True)
class RunDelta:
    """One run. While it runs, counters are tallies of what was seen (the highest step, tool call
    intents and tokens of model results); its outcome event carries the authoritative counters
    and replaces the tallies. The first outcome wins (a run has one; outcomes share a partition).
    Its input, kind and origin come from ``run_inputs`` (see :class:`InputDelta`)."""

    run_id: str
    agent_id: str
    tenant_id: str
    #: the conversation, from the state machine's outputs (see :meth:`add`)
    correlation_id: str | None
    started_at: datetime
    status: RunStatus = RunStatus.RUNNING
    output: str | None = None
    failure_reason: str | None = None
    error_class: str | None = None
    steps: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finished_at: datetime | None = None
    cancelled_by: str | None = None
    cancel_reason: str | None = None
    #: the spec version the run is pinned to: every request and the outcome carry the same
    spec_version: int | None = None
    spec_hash: str | None = None
    handoff_kind: str | None = None
    handoff_agent_id: str | None = None
    handoff_run_id: str | None = None
    handoff_note: str | None = None

    @classmethod
    def start(cls, event: Event, run_id: str) -> RunDelta:
        env = event.envelope
        return cls(run_id, env.agent_id, env.tenant_id, None, env.occurred_at)

    @property
    def finished(self) -> bool:
        return self.status is not RunStatus.RUNNING

    def add(self, event: Event) -> None:
        env = event.envelope
        # Only the state machine's own outputs are trusted to carry the conversation (a worker
        # or a person might not); the least one keeps the merge independent of order even if
        # they disagreed.
        if isinstance(event, _MACHINE_OUTPUTS):
            self.correlation_id = _least(self.correlation_id, env.correlation_id)
        self.started_at = min(self.started_at, env.occurred_at)
        if isinstance(event, _SPEC_CARRIERS):
            if self.spec_version is None:
                self.spec_version = event.spec_version
            if self.spec_hash is None:
                self.spec_hash = event.spec_hash
        if isinstance(event, _OUTCOMES):
            self.started_at = min(self.started_at, event.started_at)
            if not self.finished:
                self._finish(event)
            return
        if self.finished:
            return
        if isinstance(event, ModelCallRequested):
            self.steps = max(self.steps, event.step)
        elif isinstance(event, ModelCallCompleted):
            self.tool_calls += len(event.tool_calls)
            self.prompt_tokens += event.usage.prompt_tokens
            self.completion_tokens += event.usage.completion_tokens

    def _finish(self, event: _Outcome) -> None:
        if isinstance(event, RunCompleted):
            self.status, self.output = RunStatus.COMPLETED, event.output
        elif isinstance(event, RunFailed):
            self.status = RunStatus.FAILED
            self.failure_reason, self.error_class = event.reason, event.error_class
        elif isinstance(event, RunCancelled):
            self.status = RunStatus.CANCELLED
            self.cancelled_by, self.cancel_reason = event.cancelled_by, event.reason
        else:
            self.status = RunStatus.HANDED_OFF
            self.handoff_kind, self.handoff_agent_id = event.to_kind, event.to_agent_id
            self.handoff_run_id, self.handoff_note = event.to_run_id, event.note
        self.steps, self.tool_calls = event.steps, event.tool_calls
        self.prompt_tokens = event.usage.prompt_tokens
        self.completion_tokens = event.usage.completion_tokens
        self.finished_at = event.envelope.occurred_at

    def merge(self, later: RunDelta) -> RunDelta:
        if self.finished:
            base = self
        elif later.finished:
            base = later
        else:
            base = RunDelta(
                self.run_id,
                self.agent_id,
                self.tenant_id,
                None,
                self.started_at,
                steps=max(self.steps, later.steps),
                tool_calls=self.tool_calls + later.tool_calls,
                prompt_tokens=self.prompt_tokens + later.prompt_tokens,
                completion_tokens=self.completion_tokens + later.completion_tokens,
            )
        return dataclasses.replace(
            base,
            agent_id=self.agent_id,
            tenant_id=self.tenant_id,
            correlation_id=_least(self.correlation_id, later.correlation_id),
            started_at=min(self.started_at, later.started_at),
            spec_version=self.spec_version if self.spec_version is not None else later.spec_version,
            spec_hash=self.spec_hash if self.spec_hash is not None else later.spec_hash,
        )

    def row(self) -> tuple[Any, ...]:
        return RUN_ROW(self)


RUN_ROW = TableRow(RunDelta)
RUN_COLUMNS = RUN_ROW.columns


@dataclass(frozen=True, slots=True)
class InputDelta:
    """A ``run_inputs`` row: an input under the id of the run it starts if the processor
    accepts it, its kind, and the run that started it (another agent's run that delegated or
    handed off to it). One event, so nothing to merge: the first row of a run id stays."""

    run_id: str
    input_event_id: str
    agent_id: str
    kind: str | None
    origin_relation: str | None
    parent_agent_id: str | None
    parent_run_id: str | None
    call_id: str | None
    depth: int

    @classmethod
    def of(cls, event: AgentInput) -> InputDelta:
        env = event.envelope
        origin = event.origin
        if origin is None:
            return cls(run_id_of(env.event_id), env.event_id, env.agent_id, event.kind, *_ROOT)
        # A handed-off run answers its predecessor's delegating call, if any: that call is not
        # its own, so only a delegated run names one.
        delegated = origin.relation is RunRelation.DELEGATED
        return cls(
            run_id_of(env.event_id),
            env.event_id,
            env.agent_id,
            event.kind,
            RunRelation(origin.relation).value,
            origin.agent_id,
            origin.run_id,
            origin.reply_call_id if delegated else None,
            origin.depth,
        )

    def row(self) -> tuple[Any, ...]:
        return INPUT_ROW(self)


_ROOT = (None, None, None, None, 0)
INPUT_ROW = TableRow(InputDelta)
INPUT_COLUMNS = INPUT_ROW.columns


# -- tool calls --------------------------------------------------------------------------------


def tool_call_status(result_status: str | None, approval: str | None, requested: bool) -> str:
    """Mirror of the SQL function ``tool_call_status`` (0002_read_models.sql)."""
    if result_status is not None:
        return result_status
    if approval in ("denied", "expired", "closed"):
        return approval
    if requested or approval == "granted":
        return "requested"
    return "awaiting_approval"


_ToolEvent = ApprovalRequested | ToolCallRequested | ToolCallCompleted | ToolCallFailed


@dataclass(slots=True)
class ToolCallDelta:
    """One call of the ledger. Its first result wins (results share the tool-results partition);
    the approval's decision is copied from ``approvals`` after each batch."""

    call_id: str
    agent_id: str
    tenant_id: str
    run_id: str | None
    tool: str
    arguments: str | None = None
    arguments_hash: str | None = None
    gated: bool = False
    requested: bool = False
    result_status: Literal["completed", "failed"] | None = None
    attempts: int | None = None
    latency_ms: int | None = None
    result: str | None = None
    error_class: str | None = None
    error_message: str | None = None
    timeout_ms: int | None = None
    max_attempts: int | None = None
    requested_at: datetime | None = None
    finished_at: datetime | None = None

    @classmethod
    def start(cls, event: _ToolEvent) -> ToolCallDelta:
        env = event.envelope
        return cls(event.call_id, env.agent_id, env.tenant_id, env.run_id, event.tool)

    @property
    def status(self) -> str:
        return tool_call_status(self.result_status, None, self.requested)

    def add(self, event: _ToolEvent) -> None:
        at = event.envelope.occurred_at
        if self.run_id is None:
            self.run_id = event.envelope.run_id
        if isinstance(event, _CALL_REQUESTS):
            if self.arguments is None:
                self.arguments = jsonb_text(event.arguments_json)
                self.arguments_hash = event.arguments_hash
            self.requested_at = _earliest(self.requested_at, at)
            if isinstance(event, ApprovalRequested):
                self.gated = True
            else:
                self.requested = True
                if self.timeout_ms is None:
                    self.timeout_ms, self.max_attempts = event.timeout_ms, event.max_attempts
        elif self.result_status is None:
            self.attempts, self.latency_ms = event.attempts, event.latency_ms
            self.finished_at = at
            if isinstance(event, ToolCallCompleted):
                self.result_status, self.result = "completed", jsonb_text(event.result_json)
            else:
                self.result_status = "failed"
                self.error_class, self.error_message = event.error_class, event.error_message

    def merge(self, later: ToolCallDelta) -> ToolCallDelta:
        result = self if self.result_status is not None else later
        return ToolCallDelta(
            self.call_id,
            self.agent_id,
            self.tenant_id,
            self.run_id if self.run_id is not None else later.run_id,
            self.tool,
            self.arguments if self.arguments is not None else later.arguments,
            self.arguments_hash if self.arguments_hash is not None else later.arguments_hash,
            self.gated or later.gated,
            self.requested or later.requested,
            result.result_status,
            result.attempts,
            result.latency_ms,
            result.result,
            result.error_class,
            result.error_message,
            self.timeout_ms if self.timeout_ms is not None else later.timeout_ms,
            self.max_attempts if self.max_attempts is not None else later.max_attempts,
            _earliest(self.requested_at, later.requested_at),
            result.finished_at,
        )

    def row(self) -> tuple[Any, ...]:
        return TOOL_CALL_ROW(self)


TOOL_CALL_ROW = TableRow(ToolCallDelta, "status")
TOOL_CALL_COLUMNS = TOOL_CALL_ROW.columns


# -- approvals ---------------------------------------------------------------------------------


_Decision = ApprovalGranted | ApprovalDenied | ApprovalExpired
_ApprovalEvent = ApprovalRequested | ApprovalGranted | ApprovalDenied | ApprovalExpired
_DECISION_KIND: dict[type[Event], DecisionKind] = {
    ApprovalGranted: "granted",
    ApprovalDenied: "denied",
    ApprovalExpired: "expired",
}


def decision_record(event: _Decision) -> dict[str, Any]:
    """What ``approvals.decisions`` keeps of one decision event."""
    env = event.envelope
    return {
        "event_id": env.event_id,
        "kind": _DECISION_KIND[type(event)],
        "arguments_hash": event.arguments_hash,
        "approver": getattr(event, "approver", None),
        "comment": getattr(event, "comment", None),
        "occurred_at": env.occurred_at.isoformat(),
    }


@dataclass(slots=True)
class ApprovalDelta:
    """One gated call: its request, and every decision seen for it in topic order. Which
    decision is effective is decided in SQL once the request is known (see 0002_read_models.sql)."""

    call_id: str
    agent_id: str
    tenant_id: str
    run_id: str | None
    tool: str | None = None
    arguments: str | None = None
    arguments_hash: str | None = None
    requested_at: datetime | None = None
    deadline: datetime | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls, event: _ApprovalEvent) -> ApprovalDelta:
        env = event.envelope
        return cls(event.call_id, env.agent_id, env.tenant_id, env.run_id)

    def add(self, event: _ApprovalEvent) -> None:
        if self.run_id is None:
            self.run_id = event.envelope.run_id
        if isinstance(event, ApprovalRequested):
            if self.arguments_hash is None:
                self.tool = event.tool
                self.arguments = jsonb_text(event.arguments_json)
                self.arguments_hash = event.arguments_hash
                self.requested_at = event.envelope.occurred_at
                self.deadline = event.expires_at
        else:
            self.decisions.append(decision_record(event))

    def merge(self, later: ApprovalDelta) -> ApprovalDelta:
        request = self if self.arguments_hash is not None else later
        return ApprovalDelta(
            self.call_id,
            self.agent_id,
            self.tenant_id,
            self.run_id if self.run_id is not None else later.run_id,
            request.tool,
            request.arguments,
            request.arguments_hash,
            request.requested_at,
            request.deadline,
            [*self.decisions, *later.decisions],
        )

    def row(self) -> tuple[Any, ...]:
        return APPROVAL_ROW(self)


APPROVAL_ROW = TableRow(ApprovalDelta, json_columns=("decisions",))
APPROVAL_COLUMNS = APPROVAL_ROW.columns


# -- waits and timers --------------------------------------------------------------------------


@dataclass(slots=True)
class WaitDelta:
    """A tool call that waits for another system. Its first ``ToolCallWaiting`` wins (they share
    the tool-results partition); its completion and timeout are found after each batch."""

    call_id: str
    agent_id: str
    tenant_id: str
    run_id: str | None
    tool: str
    callback_id: str
    expires_at: datetime
    waiting_at: datetime

    @classmethod
    def of(cls, event: ToolCallWaiting) -> WaitDelta:
        env = event.envelope
        return cls(
            event.call_id,
            env.agent_id,
            env.tenant_id,
            env.run_id,
            event.tool,
            event.callback_id,
            event.expires_at,
            env.occurred_at,
        )

    def merge(self, later: WaitDelta) -> WaitDelta:
        return self

    def row(self) -> tuple[Any, ...]:
        return WAIT_ROW(self)


WAIT_ROW = TableRow(WaitDelta)
WAIT_COLUMNS = WAIT_ROW.columns


@dataclass(slots=True)
class TimerDelta:
    """A durable timer: set once (the timers partition), fired possibly more than once (the
    control partition); ``fired_at`` is the latest firing."""

    timer_id: str
    agent_id: str
    tenant_id: str
    run_id: str | None
    call_id: str
    purpose: str
    fire_at: datetime | None = None
    set_at: datetime | None = None
    fired_at: datetime | None = None

    @classmethod
    def start(cls, event: TimerSet | TimerFired) -> TimerDelta:
        env = event.envelope
        purpose = TimerPurpose(event.purpose).value
        return cls(event.timer_id, env.agent_id, env.tenant_id, env.run_id, event.call_id, purpose)

    def add(self, event: TimerSet | TimerFired) -> None:
        if self.run_id is None:
            self.run_id = event.envelope.run_id
        if isinstance(event, TimerSet):
            if self.fire_at is None:
                self.fire_at, self.set_at = event.fire_at, event.envelope.occurred_at
        else:
            self.fired_at = _latest(self.fired_at, event.envelope.occurred_at)

    def merge(self, later: TimerDelta) -> TimerDelta:
        timer = self if self.fire_at is not None else later
        return TimerDelta(
            self.timer_id,
            self.agent_id,
            self.tenant_id,
            self.run_id if self.run_id is not None else later.run_id,
            self.call_id,
            self.purpose,
            timer.fire_at,
            timer.set_at,
            _latest(self.fired_at, later.fired_at),
        )

    def row(self) -> tuple[Any, ...]:
        return TIMER_ROW(self)


TIMER_ROW = TableRow(TimerDelta)
TIMER_COLUMNS = TIMER_ROW.columns


# -- memory ------------------------------------------------------------------------------------


@dataclass(slots=True)
class FactDelta:
    """An ``agent_memory`` row: the newest fact of its key (facts share the control partition,
    so the last one of a batch is the newest)."""

    agent_id: str
    key: str
    tenant_id: str
    value: str
    recorded_at: datetime
    recorded_by: str

    @classmethod
    def of(cls, event: MemoryRecorded) -> FactDelta:
        env = event.envelope
        return cls(
            env.agent_id, event.key, env.tenant_id, event.value, env.occurred_at, event.recorded_by
        )

    def row(self) -> tuple[Any, ...]:
        return FACT_ROW(self)


FACT_ROW = TableRow(FactDelta)
FACT_COLUMNS = FACT_ROW.columns


@dataclass(frozen=True, slots=True)
class Erase:
    """One ``MemoryErased`` of a batch: the stored facts it removes (``stored_keys``; None for
    every stored key but ``keeps``, which the batch itself replaced or erased before), and the
    values of facts recorded earlier in the same batch."""

    agent_id: str
    event_id: str
    occurred_at: datetime
    stored_keys: tuple[str, ...] | None
    keeps: tuple[str, ...]
    values: tuple[str, ...]


@dataclass(slots=True)
class MemoryDelta:
    """One agent's facts and erasures of a batch, folded in the control partition's order."""

    facts: dict[str, FactDelta] = field(default_factory=dict)
    erasures: list[Erase] = field(default_factory=list)
    #: stored keys the batch replaced or erased: a later erasure does not reach their old value
    shadowed: set[str] = field(default_factory=set)
    stored_gone: bool = False

    def add(self, event: MemoryRecorded | MemoryErased) -> None:
        if isinstance(event, MemoryRecorded):
            self.facts[event.key] = FactDelta.of(event)
            self.shadowed.add(event.key)
            return
        stored: tuple[str, ...] | None
        keeps: tuple[str, ...] = ()
        if event.key is None:
            values = tuple(f.value for f in self.facts.values())
            self.facts.clear()
            stored, keeps = ((), ()) if self.stored_gone else (None, tuple(sorted(self.shadowed)))
            self.stored_gone = True
        else:
            fact = self.facts.pop(event.key, None)
            values = (fact.value,) if fact is not None else ()
            reachable = not self.stored_gone and event.key not in self.shadowed
            stored = (event.key,) if reachable else ()
            self.shadowed.add(event.key)
        env = event.envelope
        self.erasures.append(
            Erase(env.agent_id, env.event_id, env.occurred_at, stored, keeps, values)
        )


# -- a batch -----------------------------------------------------------------------------------


@dataclass
class BatchDeltas:
    """Everything one batch of (new, deduplicated) events changes in the read models."""

    agents: dict[str, AgentDelta] = field(default_factory=dict)
    runs: dict[str, RunDelta] = field(default_factory=dict)
    tool_calls: dict[str, ToolCallDelta] = field(default_factory=dict)
    approvals: dict[str, ApprovalDelta] = field(default_factory=dict)
    waits: dict[str, WaitDelta] = field(default_factory=dict)
    timers: dict[str, TimerDelta] = field(default_factory=dict)
    memory: dict[str, MemoryDelta] = field(default_factory=dict)
    #: the batch's inputs: the runs they start may now learn their input, kind and origin
    inputs: dict[str, InputDelta] = field(default_factory=dict)
    #: agents whose status the batch may change other than through their runs and approvals
    refresh: set[str] = field(default_factory=set)

    @classmethod
    def collect(cls, events: list[Event]) -> BatchDeltas:
        deltas = cls()
        for event in events:
            deltas.add(event)
        return deltas

    def add(self, event: Event) -> None:
        env = event.envelope
        agent = self.agents.get(env.agent_id)
        if agent is None:
            agent = self.agents[env.agent_id] = AgentDelta.start(event)
        agent.add(event)
        if isinstance(event, AgentInput):
            started = InputDelta.of(event)
            self.inputs.setdefault(started.run_id, started)
            return
        if env.run_id is not None:
            run = self.runs.get(env.run_id)
            if run is None:
                run = self.runs[env.run_id] = RunDelta.start(event, env.run_id)
            run.add(event)
        if isinstance(event, _TOOL_EVENTS):
            self._tool_call(event)
        if isinstance(event, _APPROVAL_EVENTS):
            self._approval(event)
        if isinstance(event, _STEERING):
            self.refresh.add(env.agent_id)
            if isinstance(event, ToolCallWaiting) and event.call_id not in self.waits:
                self.waits[event.call_id] = WaitDelta.of(event)
            elif isinstance(event, _TIMER_EVENTS):
                self._timer(event)
        elif isinstance(event, _MEMORY_EVENTS):
            self.memory.setdefault(env.agent_id, MemoryDelta()).add(event)

    def _timer(self, event: TimerSet | TimerFired) -> None:
        timer = self.timers.get(event.timer_id)
        if timer is None:
            timer = self.timers[event.timer_id] = TimerDelta.start(event)
        timer.add(event)

    def _tool_call(self, event: _ToolEvent) -> None:
        call = self.tool_calls.get(event.call_id)
        if call is None:
            call = self.tool_calls[event.call_id] = ToolCallDelta.start(event)
        call.add(event)

    def _approval(self, event: _ApprovalEvent) -> None:
        approval = self.approvals.get(event.call_id)
        if approval is None:
            approval = self.approvals[event.call_id] = ApprovalDelta.start(event)
        approval.add(event)

    def touched_calls(self) -> list[str]:
        return sorted(self.tool_calls.keys() | self.approvals.keys())


@dataclass(frozen=True)
class BatchRows:
    """Every row a list of new events writes: audit rows, and the deltas of each table sorted by
    key (so that two writers touching the same rows lock them in the same order)."""

    events: int
    audit: list[tuple[Any, ...]]
    agents: list[tuple[Any, ...]]
    runs: list[tuple[Any, ...]]
    tool_calls: list[tuple[Any, ...]]
    approvals: list[tuple[Any, ...]]
    inputs: list[tuple[Any, ...]]
    waits: list[tuple[Any, ...]] = field(default_factory=list)
    timers: list[tuple[Any, ...]] = field(default_factory=list)
    facts: list[tuple[Any, ...]] = field(default_factory=list)
    refresh: list[tuple[Any, ...]] = field(default_factory=list)
    #: erasures in the order of the agents' control partitions, applied before ``facts``
    erasures: list[Erase] = field(default_factory=list)

    @classmethod
    def of(cls, events: list[SourcedEvent], *, audit: bool = True) -> BatchRows:
        deltas = BatchDeltas.collect([e.event for e in events])
        return cls(
            len(events),
            [e.audit_row() for e in events] if audit else [],
            [deltas.agents[k].row() for k in sorted(deltas.agents)],
            [deltas.runs[k].row() for k in sorted(deltas.runs)],
            [deltas.tool_calls[k].row() for k in sorted(deltas.tool_calls)],
            [deltas.approvals[k].row() for k in sorted(deltas.approvals)],
            [deltas.inputs[k].row() for k in sorted(deltas.inputs)],
            [deltas.waits[k].row() for k in sorted(deltas.waits)],
            [deltas.timers[k].row() for k in sorted(deltas.timers)],
            [f.row() for k in sorted(deltas.memory) for f in deltas.memory[k].facts.values()],
            [(agent_id,) for agent_id in sorted(deltas.refresh)],
            [e for k in sorted(deltas.memory) for e in deltas.memory[k].erasures],
        )


def first_of_each_event(events: list[SourcedEvent]) -> list[SourcedEvent]:
    """The events in order, each event id once (its first occurrence)."""
    seen: set[str] = set()
    unique = []
    for event in events:
        event_id = event.event.envelope.event_id
        if event_id not in seen:
            seen.add(event_id)
            unique.append(event)
    return unique


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _least(a: str | None, b: str | None) -> str | None:
    """min() that ignores None, like SQL's LEAST."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)
