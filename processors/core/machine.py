"""The agent state machine: ``transition(state, event, spec) -> Decision``.

Pure: no I/O, no clock, no randomness. Time comes from the event, ids are derived from the
causing event, so folding the same history always yields the same states and the same emitted
events, byte for byte. Side effects are requests in ``Decision.emits``; workers execute them and
their results come back as events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

from agentstream.processors.core.ids import arguments_hash, derived_id
from agentstream.processors.core.spec import AgentSpec
from agentstream.processors.core.state import (
    DEDUPE_WINDOW,
    AgentState,
    ChatMessage,
    PendingTool,
    QueuedInput,
    RunState,
    evolve,
)
from agentstream.schemas.events import (
    AgentInput,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    Envelope,
    Event,
    ModelCallCompleted,
    ModelCallFailed,
    ModelCallRequested,
    RunCompleted,
    RunFailed,
    ToolCallCompleted,
    ToolCallFailed,
    ToolCallRequested,
)
from agentstream.schemas.reasons import DeadLetterReason, RunFailure

__all__ = [
    "SOURCE",
    "Applied",
    "Decision",
    "Duplicate",
    "Rejected",
    "fold",
    "transition",
]

SOURCE = "processor"


@dataclass(frozen=True)
class Applied:
    """The event advanced the agent: its new state, and what it asks of the world."""

    state: AgentState
    emits: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Duplicate:
    """The event was applied before: the state is unchanged and nothing is emitted again."""

    state: AgentState
    emits: ClassVar[tuple[Event, ...]] = ()


@dataclass(frozen=True)
class Rejected:
    """The event does not fit the agent's state; the engine dead-letters it with this reason."""

    state: AgentState
    error_class: DeadLetterReason
    reason: str
    emits: ClassVar[tuple[Event, ...]] = ()


#: What ``transition`` decided; every case carries the state to continue from and its emits.
Decision = Applied | Duplicate | Rejected


class _Rejected(Exception):
    def __init__(self, error_class: DeadLetterReason, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.reason = reason


@dataclass
class _Step:
    """What one transition accumulates: the cause, the spec, and what it emits."""

    cause: Event
    spec: AgentSpec
    emits: list[Event] = field(default_factory=list)
    calls: int = 0

    def envelope(self, state: AgentState, run: RunState) -> Envelope:
        cause = self.cause.envelope
        return Envelope(
            event_id=derived_id(cause.event_id, "emit", len(self.emits)),
            agent_id=state.agent_id,
            tenant_id=state.tenant_id,
            run_id=run.run_id,
            correlation_id=run.correlation_id,
            causation_id=cause.event_id,
            # Never before its run started, whatever the clock of the result's producer said.
            occurred_at=max(cause.occurred_at, run.started_at),
            source=SOURCE,
        )

    def new_call_id(self) -> str:
        self.calls += 1
        return derived_id(self.cause.envelope.event_id, "call", self.calls)


def transition(state: AgentState | None, event: Event, spec: AgentSpec) -> Decision:
    """Apply ``event`` to ``state`` (None for an agent never seen before)."""
    envelope = event.envelope
    if state is None:
        state = AgentState.new(envelope.agent_id, envelope.tenant_id)
    if state.has_applied(envelope.event_id):
        return Duplicate(state)
    if envelope.agent_id != state.agent_id or envelope.tenant_id != state.tenant_id:
        return Rejected(
            state,
            DeadLetterReason.WRONG_AGENT,
            f"event for {envelope.tenant_id}/{envelope.agent_id} applied to "
            f"{state.tenant_id}/{state.agent_id}",
        )
    step = _Step(event, spec)
    try:
        new_state = _apply(state, event, step)
    except _Rejected as rejected:
        return Rejected(state, rejected.error_class, rejected.reason)
    recent = (*new_state.recent_event_ids, envelope.event_id)[-DEDUPE_WINDOW:]
    new_state = evolve(
        new_state,
        version=state.version + 1,
        recent_event_ids=recent,
        last_event_id=envelope.event_id,
        updated_at=envelope.occurred_at,
    )
    return Applied(new_state, tuple(step.emits))


def fold(
    events: list[Event], spec: AgentSpec, state: AgentState | None = None
) -> AgentState | None:
    """The state after applying ``events`` in order (rejections and duplicates change nothing)."""
    for event in events:
        state = transition(state, event, spec).state
    return state


def _apply(state: AgentState, event: Event, step: _Step) -> AgentState:
    if isinstance(event, AgentInput):
        return _on_input(state, event, step)
    run = state.run
    if isinstance(
        event, RunCompleted | RunFailed | ModelCallRequested | ToolCallRequested | ApprovalRequested
    ):
        raise _Rejected(
            DeadLetterReason.NOT_AN_INPUT, f"{type(event).__name__} is an output of the processor"
        )
    if run is None or event.envelope.run_id not in (None, run.run_id):
        raise _Rejected(
            DeadLetterReason.UNKNOWN_RUN, f"no active run {event.envelope.run_id} for this agent"
        )
    if event.envelope.occurred_at > run.deadline_at:
        return _fail_run(
            state,
            run,
            step,
            RunFailure.DEADLINE_EXCEEDED,
            f"the run passed its deadline {run.deadline_at.isoformat()}",
        )
    if isinstance(event, ModelCallCompleted):
        return _on_model_completed(state, run, event, step)
    if isinstance(event, ModelCallFailed):
        _check_model_call(run, event.call_id)
        return _fail_run(
            state,
            run,
            step,
            RunFailure.MODEL_FAILED,
            f"model call failed after {event.attempts} attempt(s): "
            f"{event.error_class}: {event.error_message}",
        )
    if isinstance(event, ToolCallCompleted | ToolCallFailed):
        return _on_tool_result(state, run, event, step)
    if isinstance(event, ApprovalGranted | ApprovalDenied | ApprovalExpired):
        return _on_approval(state, run, event, step)
    raise _Rejected(
        DeadLetterReason.UNSUPPORTED_EVENT,
        f"the state machine does not handle {type(event).__name__}",
    )


def _on_input(state: AgentState, event: AgentInput, step: _Step) -> AgentState:
    queued = QueuedInput(
        event_id=event.envelope.event_id, text=event.text, occurred_at=event.envelope.occurred_at
    )
    run = state.run
    if run is not None and event.envelope.occurred_at > run.deadline_at:
        state = _fail_run(
            state,
            run,
            step,
            RunFailure.DEADLINE_EXCEEDED,
            f"the run passed its deadline {run.deadline_at.isoformat()}",
        )
    if state.run is not None:
        return evolve(state, queue=(*state.queue, queued))
    if state.queue:  # older inputs go first
        state = evolve(state, queue=(*state.queue, queued))
        return _start_next(state, step)
    return _start_run(state, queued, step)


def _start_run(state: AgentState, queued: QueuedInput, step: _Step) -> AgentState:
    started = step.cause.envelope.occurred_at
    run = RunState(
        run_id=derived_id(queued.event_id, "run"),
        input_event_id=queued.event_id,
        correlation_id=queued.event_id,
        started_at=started,
        deadline_at=started + timedelta(seconds=step.spec.budgets.run_deadline_s),
        messages=(ChatMessage(role="user", content=queued.text),),
    )
    return _request_model(evolve(state, run=run), run, step)


def _start_next(state: AgentState, step: _Step) -> AgentState:
    if not state.queue:
        return state
    head, *rest = state.queue
    return _start_run(evolve(state, queue=tuple(rest)), head, step)


def _request_model(state: AgentState, run: RunState, step: _Step) -> AgentState:
    spec = step.spec
    if run.steps >= spec.budgets.max_steps:
        return _fail_run(
            state,
            run,
            step,
            RunFailure.BUDGET_EXCEEDED,
            f"max_steps: the run used all {spec.budgets.max_steps} model steps",
        )
    call_id = step.new_call_id()
    model = spec.model
    step.emits.append(
        ModelCallRequested(
            envelope=step.envelope(state, run),
            call_id=call_id,
            step=run.steps + 1,
            provider=model.provider,
            model=model.name,
            parameters_json=spec.parameters_json,
            system_prompt=spec.system_prompt,
            messages_json=json.dumps([m.wire() for m in run.messages], ensure_ascii=False),
            tools_json=spec.tools_json,
            fallback_provider=model.fallback_provider,
            fallback_model=model.fallback_name,
        )
    )
    run = evolve(run, steps=run.steps + 1, pending_model_call=call_id)
    return evolve(state, run=run)


def _check_model_call(run: RunState, call_id: str) -> None:
    if run.pending_model_call != call_id:
        kind = (
            DeadLetterReason.FINISHED_CALL
            if call_id in run.finished_calls
            else DeadLetterReason.UNKNOWN_CALL
        )
        raise _Rejected(kind, f"model call {call_id} is not pending in run {run.run_id}")


def _on_model_completed(
    state: AgentState, run: RunState, event: ModelCallCompleted, step: _Step
) -> AgentState:
    _check_model_call(run, event.call_id)
    budgets = step.spec.budgets
    tool_calls = tuple(
        {
            "id": i.tool_call_id,
            "type": "function",
            "function": {"name": i.tool, "arguments": i.arguments_json},
        }
        for i in event.tool_calls
    )
    run = evolve(
        run,
        usage=run.usage + event.usage,
        pending_model_call=None,
        finished_calls=(*run.finished_calls, event.call_id),
        messages=(
            *run.messages,
            ChatMessage(role="assistant", content=event.content, tool_calls=tool_calls),
        ),
    )
    state = evolve(state, run=run)
    if run.usage.total > budgets.max_tokens:
        return _fail_run(
            state,
            run,
            step,
            RunFailure.BUDGET_EXCEEDED,
            f"max_tokens: the run used {run.usage.total} of {budgets.max_tokens}",
        )
    if not event.tool_calls:
        return _complete_run(state, run, step, event.content or "")
    if run.tool_calls + len(event.tool_calls) > budgets.max_tool_calls:
        return _fail_run(
            state,
            run,
            step,
            RunFailure.BUDGET_EXCEEDED,
            f"max_tool_calls: {run.tool_calls + len(event.tool_calls)} calls would "
            f"exceed {budgets.max_tool_calls}",
        )
    pending: list[PendingTool] = []
    immediate: list[ChatMessage] = []
    for intent in event.tool_calls:
        tool = step.spec.tool(intent.tool)
        problem = _argument_problem(intent.arguments_json)
        if tool is None or problem is not None:
            error = f"unknown tool {intent.tool!r}" if tool is None else problem
            immediate.append(_tool_message(intent.tool_call_id, intent.tool, {"error": error}))
            continue
        gated = tool.requires_approval
        planned = PendingTool(
            call_id=step.new_call_id(),
            tool_call_id=intent.tool_call_id,
            tool=tool.name,
            arguments_json=intent.arguments_json,
            arguments_hash=arguments_hash(intent.arguments_json),
            status="awaiting_approval" if gated else "requested",
            # a decision cannot help a run past its deadline, so the request expires with it
            approval_expires_at=(
                min(
                    event.envelope.occurred_at + timedelta(seconds=budgets.approval_timeout_s),
                    run.deadline_at,
                )
                if gated
                else None
            ),
        )
        pending.append(planned)
        step.emits.append(
            _approval_request(state, run, step, planned)
            if gated
            else _tool_request(state, run, step, planned)
        )
    run = evolve(
        run,
        pending_tools=tuple(pending),
        tool_results=tuple(immediate),
        tool_calls=run.tool_calls + len(event.tool_calls),
    )
    state = evolve(state, run=run)
    return _after_tool_step(state, run, step)


def _argument_problem(arguments_json: str) -> str | None:
    try:
        arguments = json.loads(arguments_json)
    except ValueError as exc:
        return f"arguments are not valid JSON: {exc}"
    except RecursionError:
        return "arguments are nested too deeply"
    if not isinstance(arguments, dict):
        return "arguments must be a JSON object"
    return None


def _approval_request(
    state: AgentState, run: RunState, step: _Step, pending: PendingTool
) -> ApprovalRequested:
    assert pending.approval_expires_at is not None  # set for every gated call
    return ApprovalRequested(
        envelope=step.envelope(state, run),
        call_id=pending.call_id,
        tool=pending.tool,
        arguments_json=pending.arguments_json,
        arguments_hash=pending.arguments_hash,
        expires_at=pending.approval_expires_at,
    )


def _tool_request(
    state: AgentState,
    run: RunState,
    step: _Step,
    pending: PendingTool,
) -> ToolCallRequested:
    tool = step.spec.tool(pending.tool)
    assert tool is not None  # checked when the call was planned
    return ToolCallRequested(
        envelope=step.envelope(state, run),
        call_id=pending.call_id,
        tool=tool.name,
        arguments_json=pending.arguments_json,
        arguments_hash=pending.arguments_hash,
        timeout_ms=int(tool.timeout_s * 1000),
        max_attempts=tool.retry.max_attempts,
    )


def _tool_message(tool_call_id: str, tool: str, content: object) -> ChatMessage:
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return ChatMessage(role="tool", tool_call_id=tool_call_id, name=tool, content=text)


def _resolve(
    state: AgentState, run: RunState, pending: PendingTool, message: ChatMessage, step: _Step
) -> AgentState:
    run = evolve(
        run,
        pending_tools=tuple(p for p in run.pending_tools if p.call_id != pending.call_id),
        tool_results=(*run.tool_results, message),
        finished_calls=(*run.finished_calls, pending.call_id),
    )
    return _after_tool_step(evolve(state, run=run), run, step)


def _after_tool_step(state: AgentState, run: RunState, step: _Step) -> AgentState:
    """When the step's last tool call is resolved, hand every result to the model."""
    if run.pending_tools:
        return state
    order = {c["id"]: i for i, c in enumerate(run.messages[-1].tool_calls)}
    results = sorted(run.tool_results, key=lambda m: order.get(m.tool_call_id or "", len(order)))
    run = evolve(run, messages=(*run.messages, *results), tool_results=())
    return _request_model(evolve(state, run=run), run, step)


def _on_tool_result(
    state: AgentState, run: RunState, event: ToolCallCompleted | ToolCallFailed, step: _Step
) -> AgentState:
    pending = run.pending_tool(event.call_id)
    if pending is None or pending.status != "requested":
        if event.call_id in run.finished_calls:
            kind = DeadLetterReason.FINISHED_CALL
        elif pending is not None:
            kind = DeadLetterReason.NOT_REQUESTED
        else:
            kind = DeadLetterReason.UNKNOWN_CALL
        raise _Rejected(kind, f"tool call {event.call_id} is not awaiting a result")
    if isinstance(event, ToolCallCompleted):
        message = _tool_message(pending.tool_call_id, pending.tool, event.result_json)
        return _resolve(state, run, pending, message, step)
    tool = step.spec.tool(pending.tool)
    if tool is None or tool.on_failure == "fail_run":
        return _fail_run(
            state,
            run,
            step,
            RunFailure.TOOL_FAILED,
            f"tool {pending.tool} failed after {event.attempts} attempt(s): "
            f"{event.error_class}: {event.error_message}",
        )
    error = {"error": event.error_message, "error_class": event.error_class}
    return _resolve(
        state, run, pending, _tool_message(pending.tool_call_id, pending.tool, error), step
    )


def _on_approval(
    state: AgentState,
    run: RunState,
    event: ApprovalGranted | ApprovalDenied | ApprovalExpired,
    step: _Step,
) -> AgentState:
    pending = run.pending_tool(event.call_id)
    if pending is None or pending.status != "awaiting_approval":
        raise _Rejected(
            DeadLetterReason.APPROVAL_NOT_PENDING,
            f"call {event.call_id} has no pending approval (decided, or unknown)",
        )
    if event.arguments_hash != pending.arguments_hash:
        raise _Rejected(
            DeadLetterReason.APPROVAL_HASH_MISMATCH,
            f"decision for arguments {event.arguments_hash[:12]}…, but the call's "
            f"arguments hash to {pending.arguments_hash[:12]}…",
        )
    expires = pending.approval_expires_at
    occurred = event.envelope.occurred_at
    if isinstance(event, ApprovalExpired):
        if expires is not None and occurred < expires:
            raise _Rejected(
                DeadLetterReason.APPROVAL_NOT_EXPIRED, f"expiry before the deadline {expires}"
            )
        expired = {"error": "approval expired", "expired_at": occurred.isoformat()}
        return _resolve(
            state, run, pending, _tool_message(pending.tool_call_id, pending.tool, expired), step
        )
    if expires is not None and occurred > expires:
        raise _Rejected(
            DeadLetterReason.APPROVAL_EXPIRED,
            f"decision at {occurred}, after the deadline {expires}",
        )
    if isinstance(event, ApprovalDenied):
        denied = {
            "error": "denied by approver",
            "approver": event.approver,
            "comment": event.comment,
        }
        return _resolve(
            state, run, pending, _tool_message(pending.tool_call_id, pending.tool, denied), step
        )
    step.emits.append(_tool_request(state, run, step, pending))
    granted = evolve(pending, status="requested")
    run = evolve(
        run,
        pending_tools=tuple(
            granted if p.call_id == pending.call_id else p for p in run.pending_tools
        ),
    )
    return evolve(state, run=run)


def _complete_run(state: AgentState, run: RunState, step: _Step, output: str) -> AgentState:
    step.emits.append(RunCompleted(**_run_totals(state, run, step), output=output))
    return _end_run(state, run, step, {"runs_completed": state.runs_completed + 1})


def _fail_run(
    state: AgentState, run: RunState, step: _Step, error_class: RunFailure, reason: str
) -> AgentState:
    step.emits.append(
        RunFailed(**_run_totals(state, run, step), reason=reason, error_class=error_class)
    )
    return _end_run(state, run, step, {"runs_failed": state.runs_failed + 1})


def _run_totals(state: AgentState, run: RunState, step: _Step) -> dict[str, Any]:
    """The fields every outcome carries."""
    return {
        "envelope": step.envelope(state, run),
        "steps": run.steps,
        "tool_calls": run.tool_calls,
        "usage": run.usage,
        "started_at": run.started_at,
    }


def _end_run(state: AgentState, run: RunState, step: _Step, counter: dict[str, int]) -> AgentState:
    """Close the run, count it, and start the next queued input, if any."""
    state = evolve(state, run=None, usage=state.usage + run.usage, **counter)
    return _start_next(state, step)
