"""The agent state machine: ``transition(state, event, spec) -> Decision``.

Pure: no I/O, no clock, no randomness. Time comes from the event, ids are derived from the
causing event, so folding the same history always yields the same states and the same emitted
events, byte for byte. Side effects are requests in ``Decision.emits``; workers execute them and
their results come back as events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from agentstream.processors.core.ids import arguments_hash, derived_id
from agentstream.processors.core.memory import (
    forget,
    keep_fact,
    keep_turn,
    scrub_run,
    system_prompt,
)
from agentstream.processors.core.spec import AgentSpec, BuiltinTool, Catalog, SpecVersions, ToolSpec
from agentstream.processors.core.state import (
    CANCELLED_WINDOW,
    DEDUPE_WINDOW,
    AgentState,
    ChatMessage,
    Fact,
    Handoff,
    PendingTool,
    QueuedInput,
    RunState,
    evolve,
)
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
    DelegationStatus,
    Envelope,
    Event,
    MemoryErased,
    MemoryRecorded,
    ModelCallCompleted,
    ModelCallFailed,
    ModelCallRequested,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunFailed,
    RunHandedOff,
    RunOrigin,
    RunRelation,
    TimerFired,
    TimerPurpose,
    TimerSet,
    TokenUsage,
    ToolCallCompleted,
    ToolCallFailed,
    ToolCallIntent,
    ToolCallRequested,
    ToolCallWaiting,
)
from agentstream.schemas.limits import MAX_INPUT_TEXT_BYTES, MAX_RESULT_BYTES, utf8_size
from agentstream.schemas.reasons import DeadLetterReason, RunFailure

__all__ = [
    "SOURCE",
    "Applied",
    "Decision",
    "Duplicate",
    "Rejected",
    "agent_id_of",
    "fold",
    "run_id_of",
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
    """What one transition accumulates: the cause, the kinds served (``catalog``), the
    versions of the agent's kind (``specs``), the version the run at hand is on (``spec``),
    and what it emits."""

    cause: Event
    catalog: Catalog
    specs: SpecVersions
    spec: AgentSpec
    emits: list[Event] = field(default_factory=list)
    calls: int = 0

    def envelope(
        self,
        state: AgentState,
        run: RunState,
        *,
        to_agent: str | None = None,
        to_run: str | None = None,
    ) -> Envelope:
        """The envelope of the next emit of ``run``; ``to_agent``/``to_run`` address another
        agent's run (a delegated input, a cancel, an answer) in the same conversation."""
        cause = self.cause.envelope
        return Envelope(
            event_id=derived_id(cause.event_id, "emit", len(self.emits)),
            agent_id=to_agent or state.agent_id,
            tenant_id=state.tenant_id,
            run_id=to_run if to_agent else run.run_id,
            correlation_id=run.correlation_id,
            causation_id=cause.event_id,
            # Never before its run started, whatever the clock of the result's producer said.
            occurred_at=max(cause.occurred_at, run.started_at),
            source=SOURCE,
        )

    def new_call_id(self) -> str:
        self.calls += 1
        return derived_id(self.cause.envelope.event_id, "call", self.calls)


def transition(
    state: AgentState | None, event: Event, spec: AgentSpec | SpecVersions | Catalog
) -> Decision:
    """Apply ``event`` to ``state`` (None for an agent never seen before). ``spec`` is the
    agent's spec, the versions of it served (new runs start on the newest), or the catalog of
    every kind served (the agent's kind is bound by its first input)."""
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
    catalog = Catalog.of(spec)
    try:
        state, specs = _kind(state, event, catalog)
        step = _Step(event, catalog, specs, specs.newest)
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
    events: list[Event], spec: AgentSpec | SpecVersions | Catalog, state: AgentState | None = None
) -> AgentState | None:
    """The state after applying ``events`` in order (rejections and duplicates change nothing)."""
    for event in events:
        state = transition(state, event, spec).state
    return state


def _kind(state: AgentState, event: Event, catalog: Catalog) -> tuple[AgentState, SpecVersions]:
    """The versions of the agent's kind; an input binds an agent that has none yet."""
    bound = state.kind
    if bound is None and (state.run is not None or state.queue or state.runs_total):
        bound = catalog.default.newest.name  # ran before kinds: it is of the default kind
    asked = event.kind if isinstance(event, AgentInput) else None
    name = asked or bound
    specs = catalog.kind(name)
    if specs is None:
        whose = "this input asks for" if asked else f"agent {state.agent_id} is of"
        raise _Rejected(
            DeadLetterReason.UNKNOWN_KIND,
            f"{whose} kind {name!r}, which this deployment does not serve "
            f"(it serves {', '.join(catalog.names)})",
        )
    if asked is not None and bound is not None and asked != bound:
        raise _Rejected(
            DeadLetterReason.KIND_MISMATCH,
            f"agent {state.agent_id} is of kind {bound!r}; an input cannot make it a {asked!r} "
            f"(send it to another agent id)",
        )
    if isinstance(event, AgentInput) and state.kind is None:
        state = evolve(state, kind=specs.newest.name)
    return state, specs


def _apply(state: AgentState, event: Event, step: _Step) -> AgentState:
    if isinstance(event, AgentInput):
        return _on_input(state, event, step)
    if isinstance(
        event,
        RunCompleted
        | RunFailed
        | RunCancelled
        | ModelCallRequested
        | ToolCallRequested
        | RunHandedOff
        | ApprovalRequested
        | TimerSet,
    ):
        raise _Rejected(
            DeadLetterReason.NOT_AN_INPUT, f"{type(event).__name__} is an output of the processor"
        )
    if isinstance(
        event, AgentPaused | AgentResumed | MemoryRecorded | MemoryErased | RunCancelRequested
    ):
        return _on_control(state, event, step)
    return _on_run_event(state, event, step)


def _on_control(
    state: AgentState,
    event: AgentPaused | AgentResumed | MemoryRecorded | MemoryErased | RunCancelRequested,
    step: _Step,
) -> AgentState:
    """Steering that applies whatever the agent is doing."""
    if isinstance(event, AgentPaused):
        return evolve(state, paused=True)
    if isinstance(event, AgentResumed):
        return _on_resume(state, step)
    if isinstance(event, MemoryRecorded):
        return _on_memory(state, event, step)
    if isinstance(event, MemoryErased):
        return _on_erase(state, event)
    return _on_cancel(state, event, step)


def _on_run_event(state: AgentState, event: Event, step: _Step) -> AgentState:
    run = state.run
    run_id = event.envelope.run_id
    if run is None or run_id not in (None, run.run_id):
        if run_id in state.cancelled_runs or isinstance(event, TimerFired | DelegationReturned):
            # a late answer to a cancelled run, a stale timer, or a delegated run answering
            # a run that ended meanwhile: recorded, ignored
            return state
        raise _Rejected(DeadLetterReason.UNKNOWN_RUN, f"no active run {run_id} for this agent")
    if not _on_run_spec(run, step):
        return _spec_gone(state, run, step)
    if event.envelope.occurred_at > run.deadline_at:
        return _past_deadline(state, run, step)
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
    if isinstance(event, ToolCallWaiting):
        return _on_waiting(state, run, event, step)
    if isinstance(event, CallbackCompleted):
        return _on_callback(state, run, event, step)
    if isinstance(event, DelegationReturned):
        return _on_returned(state, run, event, step)
    if isinstance(event, TimerFired):
        return _on_timer(state, run, event, step)
    if isinstance(event, ApprovalGranted | ApprovalDenied | ApprovalExpired):
        return _on_approval(state, run, event, step)
    raise _Rejected(
        DeadLetterReason.UNSUPPORTED_EVENT,
        f"the state machine does not handle {type(event).__name__}",
    )


def _on_run_spec(run: RunState, step: _Step) -> bool:
    """Point ``step.spec`` at the version ``run`` started on; False when it is not served."""
    if run.spec_version is None:  # started before runs were pinned: the newest, as then
        step.spec = step.specs.newest
        return True
    spec = step.specs.version(run.spec_version)
    if spec is None or spec.content_hash != run.spec_hash:
        return False
    step.spec = spec
    return True


def _spec_gone(state: AgentState, run: RunState, step: _Step) -> AgentState:
    served = ", ".join(s.label for s in step.specs.versions)
    spec = step.specs.version(run.spec_version or 0)
    what = (
        f"version {run.spec_version} is not served"
        if spec is None
        else f"version {run.spec_version} changed since ({run.spec_hash} -> {spec.content_hash})"
    )
    return _fail_run(
        state,
        run,
        step,
        RunFailure.SPEC_VERSION_UNAVAILABLE,
        f"the run started on {step.specs.newest.name} v{run.spec_version} ({run.spec_hash}); "
        f"{what}; this processor serves {served}",
    )


def _past_deadline(state: AgentState, run: RunState, step: _Step) -> AgentState:
    return _fail_run(
        state,
        run,
        step,
        RunFailure.DEADLINE_EXCEEDED,
        f"the run passed its deadline {run.deadline_at.isoformat()}",
    )


def _on_input(state: AgentState, event: AgentInput, step: _Step) -> AgentState:
    queued = QueuedInput(
        event_id=event.envelope.event_id,
        text=event.text,
        occurred_at=event.envelope.occurred_at,
        # a run another run started joins its conversation (and trace)
        correlation_id=event.envelope.correlation_id if event.origin else None,
        context=_context(event.context_json),
        origin=event.origin,
    )
    if run_id_of(queued.event_id) in state.cancelled_runs:  # its cancel came first
        never = _new_run(state, queued, step)
        by = f"agent:{never.origin.agent_id}" if never.origin else SOURCE
        return _cancel(state, never, step, by, "cancelled before its input arrived")
    run = state.run
    if run is not None and event.envelope.occurred_at > run.deadline_at:
        state = _past_deadline(state, run, step)
    if state.run is not None or state.paused:
        return evolve(state, queue=(*state.queue, queued))
    if state.queue:  # older inputs go first
        state = evolve(state, queue=(*state.queue, queued))
        return _start_next(state, step)
    return _start_run(state, queued, step)


def _context(context_json: str | None) -> tuple[ChatMessage, ...]:
    """The handed-over messages of an input (refused when they are not chat messages)."""
    if context_json is None:
        return ()
    try:
        messages = json.loads(context_json)
        if not isinstance(messages, list):
            raise ValueError("not a JSON list")
        return tuple(ChatMessage.model_validate(m) for m in messages)
    except (ValueError, RecursionError) as exc:
        raise _Rejected(
            DeadLetterReason.INVALID_EVENT,
            f"context_json is not a list of chat messages: {str(exc)[:300]}",
        ) from None


def _new_run(state: AgentState, queued: QueuedInput, step: _Step) -> RunState:
    """The run of ``queued``, on the newest spec, starting from the agent's past turns (and the
    conversation handed over with it)."""
    spec = step.spec = step.specs.newest
    started = step.cause.envelope.occurred_at
    deadline = started + timedelta(seconds=spec.budgets.run_deadline_s)
    origin = queued.origin
    if origin is not None and origin.deadline_at is not None:
        deadline = min(deadline, max(origin.deadline_at, started))
    history = (*(m for turn in state.conversation for m in turn.messages), *queued.context)
    return RunState(
        run_id=run_id_of(queued.event_id),
        input_event_id=queued.event_id,
        correlation_id=queued.correlation_id or queued.event_id,
        started_at=started,
        deadline_at=deadline,
        messages=(*history, ChatMessage(role="user", content=queued.text)),
        history_len=len(history),
        spec_version=spec.version,
        spec_hash=spec.content_hash,
        origin=origin,
    )


def run_id_of(input_event_id: str) -> str:
    """The id of the run an input starts (derived, so a cancel can name a queued run)."""
    return derived_id(input_event_id, "run")


def agent_id_of(agent_id: str, kind: str) -> str:
    """The agent of kind ``kind`` that ``agent_id`` delegates to and hands off to: one per
    agent and kind, so it remembers across the conversations it is asked into."""
    child = f"{agent_id}/{kind}"
    return child if len(child) <= 200 else f"{derived_id(agent_id, 'agent')}/{kind}"


def _max_steps(run: RunState, spec: AgentSpec) -> int:
    """The run's step budget: its spec's, or what its delegating run had left, if less."""
    own = spec.budgets.max_steps
    passed = run.origin.max_steps if run.origin is not None else None
    return own if passed is None else min(own, passed)


def _max_depth(run: RunState, spec: AgentSpec) -> int:
    """How deep the chain may go: the root run's limit rules the runs it leads to."""
    own = spec.budgets.max_depth
    passed = run.origin.max_depth if run.origin is not None else None
    return own if passed is None else min(own, passed)


def _max_tokens(run: RunState, spec: AgentSpec) -> int:
    own = spec.budgets.max_tokens
    passed = run.origin.max_tokens if run.origin is not None else None
    return own if passed is None else min(own, passed)


def _start_run(state: AgentState, queued: QueuedInput, step: _Step) -> AgentState:
    run = _new_run(state, queued, step)
    return _request_model(evolve(state, run=run), run, step)


def _start_next(state: AgentState, step: _Step) -> AgentState:
    if not state.queue or state.paused:
        return state
    head, *rest = state.queue
    return _start_run(evolve(state, queue=tuple(rest)), head, step)


def _request_model(state: AgentState, run: RunState, step: _Step) -> AgentState:
    spec = step.spec
    max_steps = _max_steps(run, spec)
    if run.steps + run.child_steps >= max_steps:
        children = f" ({run.child_steps} by its delegated runs)" if run.child_steps else ""
        return _fail_run(
            state,
            run,
            step,
            RunFailure.BUDGET_EXCEEDED,
            f"max_steps: the run used all {max_steps} model steps{children}",
        )
    if state.paused:
        return evolve(state, run=evolve(run, held_model_call=True))
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
            system_prompt=system_prompt(spec.system_prompt, state.facts),
            messages_json=json.dumps([m.wire() for m in run.messages], ensure_ascii=False),
            tools_json=spec.tools_json,
            fallback_provider=model.fallback_provider,
            fallback_model=model.fallback_name,
            spec_version=run.spec_version,
            spec_hash=run.spec_hash,
        )
    )
    run = evolve(run, steps=run.steps + 1, pending_model_call=call_id, held_model_call=False)
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
    max_tokens = _max_tokens(run, step.spec)
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
    used = (run.usage + run.child_usage).total
    if used > max_tokens:
        return _fail_run(
            state,
            run,
            step,
            RunFailure.BUDGET_EXCEEDED,
            f"max_tokens: the run used {used} of {max_tokens}",
        )
    if not event.tool_calls:
        return _complete_run(state, run, step, event.content or "")
    refused = _chain_refusal(state, run, step, event.tool_calls)
    if refused is not None:
        return _fail_run(state, run, step, RunFailure.DELEGATION_REFUSED, refused)
    for intent in event.tool_calls:
        target = step.spec.tool(intent.tool)
        if target is not None and target.builtin is BuiltinTool.HANDOFF:
            return _hand_off(state, run, step, target, intent)
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
        planned = PendingTool(
            call_id=step.new_call_id(),
            tool_call_id=intent.tool_call_id,
            tool=tool.name,
            arguments_json=intent.arguments_json,
            arguments_hash=arguments_hash(intent.arguments_json),
            status="held",
        )
        if state.paused:
            pending.append(planned)
            continue
        _sort_into(_dispatch(state, run, step, planned), pending, immediate)
    run = evolve(
        run,
        pending_tools=tuple(pending),
        tool_results=tuple(immediate),
        tool_calls=run.tool_calls + len(event.tool_calls),
    )
    state = evolve(state, run=run)
    return _after_tool_step(state, run, step)


def _sort_into(
    dispatched: PendingTool | ChatMessage, pending: list[PendingTool], answered: list[ChatMessage]
) -> None:
    if isinstance(dispatched, ChatMessage):
        answered.append(dispatched)
    else:
        pending.append(dispatched)


def _dispatch(
    state: AgentState, run: RunState, step: _Step, planned: PendingTool
) -> PendingTool | ChatMessage:
    """Ask the world for a planned call (or answer it at once, for a built-in tool): the call
    in its new status, or the tool message that answers it."""
    tool = step.spec.tool(planned.tool)
    assert tool is not None  # checked when the call was planned
    now = step.cause.envelope.occurred_at
    if tool.builtin is BuiltinTool.REMEMBER:
        return _remember(state, run, step, planned)
    if tool.builtin is BuiltinTool.SLEEP:
        return _sleep(state, run, step, planned)
    if tool.builtin is BuiltinTool.DELEGATE:
        return _delegate(state, run, step, planned, tool)
    if tool.requires_approval:
        budgets = step.spec.budgets
        # a decision cannot help a run past its deadline, so the request expires with it
        expires = min(now + timedelta(seconds=budgets.approval_timeout_s), run.deadline_at)
        gated = evolve(planned, status="awaiting_approval", approval_expires_at=expires)
        step.emits.append(_approval_request(state, run, step, gated))
        return gated
    requested = evolve(planned, status="requested")
    step.emits.append(_tool_request(state, run, step, requested))
    return requested


def _remember(state: AgentState, run: RunState, step: _Step, planned: PendingTool) -> ChatMessage:
    """The built-in ``remember``: the fact goes out as a MemoryRecorded, which the agent
    applies when it reads it back, like a fact from anyone else."""
    arguments = json.loads(planned.arguments_json)
    key, value = arguments.get("key"), arguments.get("value")
    memory = step.spec.memory
    problem = None
    if not isinstance(key, str) or not 1 <= len(key) <= 200:
        problem = "key must be text of 1 to 200 characters"
    elif not isinstance(value, str):
        problem = "value must be text"
    elif memory.max_facts == 0:
        problem = "this agent keeps no facts"
    elif utf8_size(value) > memory.max_fact_bytes:
        problem = f"value is over {memory.max_fact_bytes} bytes"
    if problem is not None:
        return _tool_message(planned.tool_call_id, planned.tool, {"error": problem})
    step.emits.append(
        MemoryRecorded(
            envelope=step.envelope(state, run),
            key=key,
            value=value,
            recorded_by=f"agent:{state.agent_id}",
        )
    )
    return _tool_message(planned.tool_call_id, planned.tool, {"remembered": key})


def _sleep(
    state: AgentState, run: RunState, step: _Step, planned: PendingTool
) -> PendingTool | ChatMessage:
    arguments = json.loads(planned.arguments_json)
    wake, problem = _wake_time(arguments, step.cause.envelope.occurred_at)
    if wake is not None and wake > run.deadline_at:
        problem = f"the run's deadline {run.deadline_at.isoformat()} comes before {wake}"
    if wake is None or problem is not None:
        return _tool_message(planned.tool_call_id, planned.tool, {"error": problem})
    sleeping = evolve(planned, status="sleeping", due_at=wake)
    step.emits.append(_timer(state, run, step, sleeping, TimerPurpose.SLEEP))
    return sleeping


def _wake_time(arguments: dict[str, Any], now: datetime) -> tuple[datetime | None, str | None]:
    seconds, until = arguments.get("seconds"), arguments.get("until")
    if (seconds is None) == (until is None):
        return None, "give either seconds or until"
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            return None, "seconds must be a number, 0 or more"
        if seconds > 366 * 86_400:
            return None, "sleep at most a year"
        return now + timedelta(seconds=seconds), None
    try:
        wake = datetime.fromisoformat(str(until))
    except ValueError:
        return None, f"until is not an ISO 8601 time: {until!r}"
    if wake.tzinfo is None:
        return None, "until needs a UTC offset (like 2026-12-02T18:00:00+00:00)"
    return max(wake, now), None


def _timer(
    state: AgentState, run: RunState, step: _Step, pending: PendingTool, purpose: TimerPurpose
) -> TimerSet:
    """The durable timer that ends ``pending`` at its ``due_at``."""
    assert pending.due_at is not None  # set for every sleeping or waiting call
    return TimerSet(
        envelope=step.envelope(state, run),
        timer_id=derived_id(pending.call_id, "timer"),
        call_id=pending.call_id,
        purpose=purpose,
        fire_at=pending.due_at,
    )


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


def _requested_call(run: RunState, call_id: str) -> PendingTool:
    """The call a worker answers: it must be requested and not yet answered."""
    pending = run.pending_tool(call_id)
    if pending is None or pending.status != "requested":
        if call_id in run.finished_calls:
            kind = DeadLetterReason.FINISHED_CALL
        elif pending is not None:
            kind = DeadLetterReason.NOT_REQUESTED
        else:
            kind = DeadLetterReason.UNKNOWN_CALL
        raise _Rejected(kind, f"tool call {call_id} is not awaiting a result")
    return pending


def _on_tool_result(
    state: AgentState, run: RunState, event: ToolCallCompleted | ToolCallFailed, step: _Step
) -> AgentState:
    pending = _requested_call(run, event.call_id)
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


def _on_waiting(
    state: AgentState, run: RunState, event: ToolCallWaiting, step: _Step
) -> AgentState:
    pending = _requested_call(run, event.call_id)
    due = min(event.expires_at, run.deadline_at)
    waiting = evolve(pending, status="awaiting_callback", callback_id=event.callback_id, due_at=due)
    step.emits.append(_timer(state, run, step, waiting, TimerPurpose.CALLBACK))
    calls = tuple(waiting if p.call_id == pending.call_id else p for p in run.pending_tools)
    return evolve(state, run=evolve(run, pending_tools=calls))


def _on_callback(
    state: AgentState, run: RunState, event: CallbackCompleted, step: _Step
) -> AgentState:
    for pending in run.pending_tools:
        if pending.status == "awaiting_callback" and pending.callback_id == event.callback_id:
            message = _tool_message(pending.tool_call_id, pending.tool, event.result_json)
            return _resolve(state, run, pending, message, step)
    raise _Rejected(
        DeadLetterReason.CALLBACK_NOT_PENDING,
        f"no call of run {run.run_id} waits for callback {event.callback_id} "
        "(completed, timed out, or never asked for)",
    )


_WAITS_FOR = {
    TimerPurpose.SLEEP: "sleeping",
    TimerPurpose.CALLBACK: "awaiting_callback",
    TimerPurpose.DELEGATION: "delegated",
}


def _on_timer(state: AgentState, run: RunState, event: TimerFired, step: _Step) -> AgentState:
    pending = run.pending_tool(event.call_id)
    waits_for = _WAITS_FOR[event.purpose]
    if pending is None or pending.status != waits_for or pending.due_at is None:
        return state  # the call ended otherwise (its callback came): recorded, ignored
    if event.envelope.occurred_at < pending.due_at:
        raise _Rejected(
            DeadLetterReason.TIMER_NOT_DUE,
            f"timer of call {event.call_id} fired at {event.envelope.occurred_at}, "
            f"before {pending.due_at}",
        )
    if event.purpose is TimerPurpose.DELEGATION:
        return _delegation_timed_out(state, run, pending, step)
    if event.purpose is TimerPurpose.SLEEP:
        woke = {"slept_until": pending.due_at.isoformat()}
        return _resolve(
            state, run, pending, _tool_message(pending.tool_call_id, pending.tool, woke), step
        )
    why = f"no system completed callback {pending.callback_id} by {pending.due_at.isoformat()}"
    tool = step.spec.tool(pending.tool)
    if tool is None or tool.on_failure == "fail_run":
        return _fail_run(state, run, step, RunFailure.CALLBACK_TIMED_OUT, why)
    timed_out = {"error": why, "error_class": RunFailure.CALLBACK_TIMED_OUT}
    return _resolve(
        state, run, pending, _tool_message(pending.tool_call_id, pending.tool, timed_out), step
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


def _chain_refusal(
    state: AgentState, run: RunState, step: _Step, intents: list[ToolCallIntent]
) -> str | None:
    """Why a delegation or handoff among ``intents`` would go too deep or in a circle."""
    origin = run.origin
    lineage = [*(origin.lineage if origin else ()), step.spec.name]
    depth = (origin.depth if origin else 0) + 1
    max_depth = _max_depth(run, step.spec)
    for intent in intents:
        target = step.spec.tool(intent.tool)
        if target is None or target.target is None:
            continue
        chain = " -> ".join([*lineage, target.target])
        if target.target in lineage:
            return f"delegation cycle: {chain} ({target.name} asks a kind already in the chain)"
        if depth > max_depth:
            return f"delegation depth {depth} is over max_depth {max_depth}: {chain}"
        if step.catalog.kind(target.target) is None:
            return f"{target.name} names kind {target.target!r}, which is not served here"
    return None


def _origin(state: AgentState, run: RunState, step: _Step, relation: RunRelation) -> RunOrigin:
    """The origin of a run that ``run`` starts. A delegated run answers ``run`` and gets what
    is left of its budgets and time; a handed-off run takes over ``run``'s place: it answers
    whoever ``run`` would have, within the same limits."""
    parent = run.origin
    spec = step.spec
    origin = RunOrigin(
        relation=relation,
        agent_id=state.agent_id,
        run_id=run.run_id,
        depth=(parent.depth if parent else 0) + 1,
        lineage=[*(parent.lineage if parent else ()), spec.name],
        max_depth=_max_depth(run, spec),
    )
    if relation is RunRelation.HANDED_OFF and parent is None:
        return origin  # the receiving run is a root run of its own kind's budgets
    if relation is RunRelation.HANDED_OFF:
        assert parent is not None
        # the receiver answers for this run too: what it spent goes with the answer
        carried = parent.carried_usage or TokenUsage()
        origin = evolve(
            origin,
            reply_agent_id=parent.reply_agent_id,
            reply_run_id=parent.reply_run_id,
            reply_call_id=parent.reply_call_id,
            carried_steps=parent.carried_steps + run.steps + run.child_steps,
            carried_usage=carried + run.usage + run.child_usage,
        )
    else:
        origin = evolve(origin, reply_agent_id=state.agent_id, reply_run_id=run.run_id)
    return evolve(
        origin,
        max_tokens=max(0, _max_tokens(run, spec) - (run.usage + run.child_usage).total),
        max_steps=max(0, _max_steps(run, spec) - run.steps - run.child_steps),
        deadline_at=run.deadline_at,
    )


def _delegate(
    state: AgentState, run: RunState, step: _Step, planned: PendingTool, tool: ToolSpec
) -> PendingTool | ChatMessage:
    """The built-in delegation: an input for the agent of the target kind, starting a run
    whose outcome comes back as this call's result (a DelegationReturned)."""
    assert tool.target is not None  # every delegate tool names its kind
    task = json.loads(planned.arguments_json).get("task")
    if not isinstance(task, str) or not task.strip():
        return _tool_message(planned.tool_call_id, planned.tool, {"error": "task must be text"})
    if utf8_size(task) > MAX_INPUT_TEXT_BYTES:
        error = f"task is over {MAX_INPUT_TEXT_BYTES:,} bytes"
        return _tool_message(planned.tool_call_id, planned.tool, {"error": error})
    child = agent_id_of(state.agent_id, tool.target)
    input_id = derived_id(planned.call_id, "delegated")
    due = min(step.cause.envelope.occurred_at + timedelta(seconds=tool.timeout_s), run.deadline_at)
    origin = _origin(state, run, step, RunRelation.DELEGATED)
    origin = evolve(origin, reply_call_id=planned.call_id, deadline_at=due)
    envelope = step.envelope(state, run, to_agent=child)
    step.emits.append(
        AgentInput(
            envelope=evolve(envelope, event_id=input_id),
            text=task,
            kind=tool.target,
            origin=origin,
        )
    )
    delegated = evolve(
        planned,
        status="delegated",
        child_agent_id=child,
        child_run_id=run_id_of(input_id),
        due_at=due,
    )
    step.emits.append(_timer(state, run, step, delegated, TimerPurpose.DELEGATION))
    return delegated


def _on_returned(
    state: AgentState, run: RunState, event: DelegationReturned, step: _Step
) -> AgentState:
    pending = run.pending_tool(event.call_id)
    if pending is None or pending.status != "delegated":
        if event.call_id in run.finished_calls:
            return state  # answered after its wait timed out: recorded, ignored
        raise _Rejected(
            DeadLetterReason.UNKNOWN_CALL, f"call {event.call_id} delegated nothing in this run"
        )
    run = evolve(
        run, child_usage=run.child_usage + event.usage, child_steps=run.child_steps + event.steps
    )
    state = evolve(state, run=run)
    max_tokens = _max_tokens(run, step.spec)
    used = (run.usage + run.child_usage).total
    if used > max_tokens:
        # the run that answered has ended: failing must not cancel it with the calls left
        answered = evolve(
            run, pending_tools=tuple(p for p in run.pending_tools if p.call_id != event.call_id)
        )
        return _fail_run(
            evolve(state, run=answered),
            answered,
            step,
            RunFailure.BUDGET_EXCEEDED,
            f"max_tokens: the run and its delegated runs used {used} of {max_tokens}",
        )
    if event.status is DelegationStatus.COMPLETED:
        result: object = event.output or ""
    else:
        result = {"error": event.reason or str(event.status), "status": event.status}
    return _resolve(
        state, run, pending, _tool_message(pending.tool_call_id, pending.tool, result), step
    )


def _delegation_timed_out(
    state: AgentState, run: RunState, pending: PendingTool, step: _Step
) -> AgentState:
    assert pending.due_at is not None  # set for every delegated call
    why = f"the {pending.tool} run did not answer by {pending.due_at.isoformat()}"
    _cancel_child(state, run, step, pending, why)
    timed_out = {"error": why, "status": DelegationStatus.TIMED_OUT}
    return _resolve(
        state, run, pending, _tool_message(pending.tool_call_id, pending.tool, timed_out), step
    )


def _cancel_child(
    state: AgentState, run: RunState, step: _Step, pending: PendingTool, reason: str
) -> None:
    step.emits.append(
        RunCancelRequested(
            envelope=step.envelope(
                state, run, to_agent=pending.child_agent_id, to_run=pending.child_run_id
            ),
            requested_by=f"agent:{state.agent_id}",
            reason=reason,
        )
    )


def _hand_off(
    state: AgentState, run: RunState, step: _Step, tool: ToolSpec, intent: ToolCallIntent
) -> AgentState:
    """End the run as handed off: an input for the agent of the target kind carries the
    conversation so far, and that agent's run continues it."""
    assert tool.target is not None  # every handoff tool names its kind
    note = json.loads(intent.arguments_json).get("note")
    note = note.strip() if isinstance(note, str) else ""
    target = agent_id_of(state.agent_id, tool.target)
    input_id = derived_id(step.cause.envelope.event_id, "handoff")
    question = run.messages[run.history_len].content or ""
    step.emits.append(
        AgentInput(
            envelope=evolve(step.envelope(state, run, to_agent=target), event_id=input_id),
            text=_within(note or question, MAX_INPUT_TEXT_BYTES),
            kind=tool.target,
            context_json=_handed_over(run),
            origin=_origin(state, run, step, RunRelation.HANDED_OFF),
        )
    )
    step.emits.append(
        RunHandedOff(
            **_run_totals(state, run, step),
            to_kind=tool.target,
            to_agent_id=target,
            to_run_id=run_id_of(input_id),
            note=note,
        )
    )
    handoff = Handoff(run_id=run.run_id, to_agent_id=target, to_run_id=run_id_of(input_id))
    counter = {
        "runs_handed_off": state.runs_handed_off + 1,
        "handoffs": (*state.handoffs, handoff)[-CANCELLED_WINDOW:],
    }
    return _end_run(state, run, step, counter)


def _handed_over(run: RunState) -> str:
    """The run's conversation for the receiving agent, without the handoff call itself (no
    result answers it), oldest messages dropped first to fit in an event."""
    *before, last = run.messages
    messages = [m.wire() for m in before]
    if last.content:
        messages.append({"role": "assistant", "content": last.content})
    while messages:
        encoded = json.dumps(messages, ensure_ascii=False)
        if utf8_size(encoded) <= MAX_RESULT_BYTES:
            return encoded
        messages.pop(0)
        while messages and messages[0]["role"] == "tool":  # never a result without its call
            messages.pop(0)
    return "[]"


def _within(text: str, limit: int) -> str:
    encoded = text.encode()
    return text if len(encoded) <= limit else encoded[:limit].decode(errors="ignore")


def _answer_origin(
    state: AgentState,
    run: RunState,
    step: _Step,
    status: DelegationStatus,
    *,
    output: str | None = None,
    reason: str | None = None,
) -> None:
    """A delegated run's outcome, sent back to the run waiting for it."""
    origin = run.origin
    if origin is None or origin.reply_call_id is None:
        return
    assert origin.reply_agent_id is not None and origin.reply_run_id is not None
    step.emits.append(
        DelegationReturned(
            envelope=step.envelope(
                state, run, to_agent=origin.reply_agent_id, to_run=origin.reply_run_id
            ),
            call_id=origin.reply_call_id,
            child_agent_id=state.agent_id,
            child_run_id=run.run_id,
            status=status,
            output=output,
            reason=reason,
            steps=run.steps + run.child_steps + origin.carried_steps,
            usage=run.usage + run.child_usage + (origin.carried_usage or TokenUsage()),
        )
    )


def _complete_run(state: AgentState, run: RunState, step: _Step, output: str) -> AgentState:
    step.emits.append(RunCompleted(**_run_totals(state, run, step), output=output))
    _answer_origin(state, run, step, DelegationStatus.COMPLETED, output=output)
    state = evolve(state, conversation=keep_turn(state.conversation, run, output, step.spec.memory))
    return _end_run(state, run, step, {"runs_completed": state.runs_completed + 1})


def _fail_run(
    state: AgentState, run: RunState, step: _Step, error_class: RunFailure, reason: str
) -> AgentState:
    step.emits.append(
        RunFailed(**_run_totals(state, run, step), reason=reason, error_class=error_class)
    )
    timed_out = error_class is RunFailure.DEADLINE_EXCEEDED
    status = DelegationStatus.TIMED_OUT if timed_out else DelegationStatus.FAILED
    _answer_origin(state, run, step, status, reason=f"{error_class}: {reason}")
    return _end_run(state, run, step, {"runs_failed": state.runs_failed + 1})


def _run_totals(state: AgentState, run: RunState, step: _Step) -> dict[str, Any]:
    """The fields every outcome carries."""
    return {
        "envelope": step.envelope(state, run),
        "steps": run.steps,
        "tool_calls": run.tool_calls,
        "usage": run.usage,
        "started_at": run.started_at,
        "spec_version": run.spec_version,
        "spec_hash": run.spec_hash,
    }


def _on_cancel(state: AgentState, event: RunCancelRequested, step: _Step) -> AgentState:
    target = event.envelope.run_id
    run = state.run
    if run is not None and target in (None, run.run_id):
        return _cancel(state, run, step, event.requested_by, event.reason)
    for queued in state.queue:
        if run_id_of(queued.event_id) == target:  # not started yet: it never will
            state = evolve(state, queue=tuple(q for q in state.queue if q is not queued))
            run = _new_run(state, queued, step)
            return _cancel(state, run, step, event.requested_by, event.reason)
    if target in state.cancelled_runs:
        return state  # cancelled already
    for handoff in state.handoffs:
        if handoff.run_id == target:  # the run that took over is the one to stop
            _pass_cancel_on(state, handoff, step, event)
            return state
    if target is not None and event.envelope.source == SOURCE:
        # An agent's cancel of its delegated run: it may overtake the run's input (another
        # topic) or cross its answer. Kept, so the input is cancelled when it arrives.
        return evolve(state, cancelled_runs=(*state.cancelled_runs, target)[-CANCELLED_WINDOW:])
    raise _Rejected(
        DeadLetterReason.UNKNOWN_RUN,
        f"no run {target} to cancel: it ended, or never started"
        if target
        else "the agent has no run to cancel",
    )


def _pass_cancel_on(
    state: AgentState, handoff: Handoff, step: _Step, event: RunCancelRequested
) -> None:
    cause = step.cause.envelope
    step.emits.append(
        RunCancelRequested(
            envelope=Envelope(
                event_id=derived_id(cause.event_id, "emit", len(step.emits)),
                agent_id=handoff.to_agent_id,
                tenant_id=state.tenant_id,
                run_id=handoff.to_run_id,
                correlation_id=cause.correlation_id,
                causation_id=cause.event_id,
                occurred_at=cause.occurred_at,
                source=SOURCE,
            ),
            requested_by=event.requested_by,
            reason=event.reason,
        )
    )


def _cancel(
    state: AgentState, run: RunState, step: _Step, requested_by: str, reason: str
) -> AgentState:
    step.emits.append(
        RunCancelled(**_run_totals(state, run, step), reason=reason, cancelled_by=requested_by)
    )
    why = f"cancelled by {requested_by}" + (f": {reason}" if reason else "")
    _answer_origin(state, run, step, DelegationStatus.CANCELLED, reason=why)
    counter = {
        "runs_cancelled": state.runs_cancelled + 1,
        "cancelled_runs": (*state.cancelled_runs, run.run_id)[-CANCELLED_WINDOW:],
    }
    if state.run is not run:  # a queued run: the running one goes on
        return evolve(state, **counter)
    return _end_run(state, run, step, counter)


def _on_resume(state: AgentState, step: _Step) -> AgentState:
    if not state.paused:
        return state
    state = evolve(state, paused=False)
    run = state.run
    if run is None:
        return _start_next(state, step)
    if not _on_run_spec(run, step):
        return _spec_gone(state, run, step)
    if step.cause.envelope.occurred_at > run.deadline_at:
        return _past_deadline(state, run, step)
    if run.held_model_call:
        return _request_model(state, run, step)
    if not any(p.status == "held" for p in run.pending_tools):
        return state  # nothing held back: what is in flight is answered as usual
    pending: list[PendingTool] = []
    immediate = list(run.tool_results)
    for planned in run.pending_tools:
        if planned.status != "held":
            pending.append(planned)
            continue
        _sort_into(_dispatch(state, run, step, planned), pending, immediate)
    run = evolve(run, pending_tools=tuple(pending), tool_results=tuple(immediate))
    return _after_tool_step(evolve(state, run=run), run, step)


def _on_memory(state: AgentState, event: MemoryRecorded, step: _Step) -> AgentState:
    memory = step.specs.newest.memory
    if memory.max_facts == 0:
        raise _Rejected(DeadLetterReason.MEMORY_REFUSED, "this agent keeps no facts")
    size = utf8_size(event.value)
    if size > memory.max_fact_bytes:
        raise _Rejected(
            DeadLetterReason.MEMORY_REFUSED,
            f"fact {event.key!r} is {size:,} bytes, over the agent's {memory.max_fact_bytes:,}",
        )
    fact = Fact(
        key=event.key,
        value=event.value,
        recorded_at=event.envelope.occurred_at,
        recorded_by=event.recorded_by,
    )
    return evolve(state, facts=keep_fact(state.facts, fact, memory.max_facts))


def _on_erase(state: AgentState, event: MemoryErased) -> AgentState:
    erased = [f for f in state.facts if event.key in (None, f.key)]
    secrets = [f.value for f in erased]
    conversation = () if event.key is None else forget(state.conversation, secrets)
    run = state.run if state.run is None else scrub_run(state.run, secrets)
    facts = tuple(f for f in state.facts if f not in erased)
    return evolve(state, facts=facts, conversation=conversation, run=run)


def _end_run(state: AgentState, run: RunState, step: _Step, counter: dict[str, Any]) -> AgentState:
    """Close the run, count it, cancel the runs it still waits for, and start the next queued
    input, if any."""
    for pending in run.pending_tools:
        if pending.status == "delegated":
            _cancel_child(state, run, step, pending, f"the delegating run {run.run_id} ended")
    state = evolve(state, run=None, usage=state.usage + run.usage, **counter)
    return _start_next(state, step)
