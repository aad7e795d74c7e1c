"""The scenarios recorded as golden histories (see golden.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from builders import T0, envelope
from golden import Reply, Rollout, Served
from world import (
    CHAT_WORLD,
    TEAM_WORLD,
    agent_spec,
    await_payment,
    callback_done,
    respond,
    result_envelope,
    support_spec,
    team,
    timer_fired,
    waiting,
)

from agentstream.processors.core.machine import run_id_of
from agentstream.processors.core.spec import Memory, SpecVersions, remember, sleep
from agentstream.schemas.events import (
    AgentInput,
    AgentPaused,
    AgentResumed,
    ApprovalDenied,
    ApprovalRequested,
    Event,
    MemoryRecorded,
    ModelCallRequested,
    RunCancelRequested,
    TimerPurpose,
    TimerSet,
    ToolCallFailed,
    ToolCallRequested,
)

Scenario = tuple[Served, list[Event], Callable[[Event], Reply]]


def _input(n: int, text: str, agent: str = "golden-agent") -> AgentInput:
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"golden/{agent}/{n}"))
    return AgentInput(
        envelope=envelope(agent, event_id=event_id, occurred_at=T0 + timedelta(seconds=n)),
        text=text,
    )


def _deny(request: Event) -> Event | None:
    if isinstance(request, ApprovalRequested):
        return ApprovalDenied(
            envelope=result_envelope(request, "deny", source="cli"),
            call_id=request.call_id,
            arguments_hash=request.arguments_hash,
            approver="bob",
            comment="not without a receipt",
        )
    return respond(request)


def _tool_breaks(request: Event) -> Event | None:
    if isinstance(request, ToolCallRequested):
        return ToolCallFailed(
            envelope=result_envelope(request, "fail"),
            call_id=request.call_id,
            tool=request.tool,
            attempts=3,
            error_class="ConnectionError",
            error_message="orders service unreachable",
        )
    return respond(request)


def _cancel(n: int, run_id: str, agent: str = "golden-agent") -> RunCancelRequested:
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"golden/{agent}/cancel/{n}"))
    return RunCancelRequested(
        envelope=envelope(
            agent, event_id=event_id, run_id=run_id, occurred_at=T0 + timedelta(seconds=n)
        ),
        requested_by="ops",
        reason="the customer hung up",
    )


def _chat(request: Event) -> Reply:
    """The chat world, and the processor reading back the facts it recorded."""
    if isinstance(request, MemoryRecorded):
        return request
    return CHAT_WORLD(request)


_CANCELLED = [_input(1, "where is order o-1?"), _input(2, "second"), _input(3, "third")]


_STEERED = _input(1, "where is it")


def _steer(request: Event, purpose: str, kind: type[AgentPaused] | type[AgentResumed]) -> Event:
    return kind(
        envelope=result_envelope(request, purpose, delay_ms=1, source="cli"), requested_by="ops"
    )


def _pausing(request: Event) -> Reply:
    """The agent is paused while its first run waits for the model: an operator resumes it
    after the model answered, then pauses it again around the tool's result."""
    reply = respond(request)
    if reply is None or request.envelope.correlation_id != _STEERED.envelope.event_id:
        return reply
    if isinstance(request, ModelCallRequested) and request.step == 1:
        return [reply, _steer(request, "resume", AgentResumed)]
    if isinstance(request, ToolCallRequested):
        pause, resume = (
            _steer(request, "pause", AgentPaused),
            _steer(request, "resume", AgentResumed),
        )
        return [pause, reply, resume]
    return reply


def _paused(n: int, agent: str = "golden-agent") -> AgentPaused:
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"golden/{agent}/pause/{n}"))
    at = T0 + timedelta(seconds=n)
    return AgentPaused(
        envelope=envelope(agent, event_id=event_id, occurred_at=at), requested_by="ops"
    )


_PAID = _input(1, "pay i-1")


def _callbacks(request: Event) -> Reply:
    """The payment system: it calls the first input's payment back after 10 minutes, and
    never the others'; the timer worker fires every timer when due."""
    if isinstance(request, ToolCallRequested) and request.tool == "await_payment":
        expires = request.envelope.occurred_at + timedelta(minutes=30)
        return waiting(request, expires, f"cb-{request.call_id}")
    if isinstance(request, TimerSet) and request.purpose is TimerPurpose.CALLBACK:
        fired = timer_fired(request)
        if request.envelope.correlation_id != _PAID.envelope.event_id:
            return fired
        return [callback_done(request, f"cb-{request.call_id}", '{"paid": true}'), fired]
    return _sleeper(request)


def _sleeper(request: Event) -> Reply:
    """The chat world, with a timer worker that fires every timer when due."""
    if isinstance(request, TimerSet):
        return timer_fired(request)
    return CHAT_WORLD(request)


def _asked(n: int, text: str) -> AgentInput:
    """An input for the team's triage agent (see world.team)."""
    return _input(n, text, agent="golden-team")


_V1 = support_spec()
_V2 = agent_spec(version=2, system_prompt="Be brief.")

SCENARIOS: dict[str, Scenario] = {
    "lookup_run": (support_spec(), [_input(1, "where is order o-1?")], respond),
    "refund_approved": (support_spec(), [_input(1, "refund please")], respond),
    "refund_denied": (support_spec(), [_input(1, "refund please")], _deny),
    "queued_inputs": (
        support_spec(),
        [_input(1, "first"), _input(2, "second, refund"), _input(3, "third")],
        respond,
    ),
    "tool_failure": (support_spec(), [_input(1, "where is it")], _tool_breaks),
    "step_budget": (support_spec(max_steps=1), [_input(1, "where is it")], respond),
    "memory_followup": (
        agent_spec(remember, memory=Memory(turns=2)),
        [_input(1, "remember lang=Dutch"), _input(2, "where is order o-1?")],
        _chat,
    ),
    "cancel_midrun": (
        support_spec(),
        [
            *_CANCELLED,
            _cancel(4, run_id_of(_CANCELLED[0].envelope.event_id)),
            _cancel(5, run_id_of(_CANCELLED[2].envelope.event_id)),
        ],
        respond,
    ),
    "pause_resume": (
        support_spec(),
        [_STEERED, _paused(2), _input(3, "second")],
        _pausing,
    ),
    "callback_wait": (
        agent_spec(await_payment),
        [_PAID, _input(2, "pay i-2")],
        _callbacks,
    ),
    "durable_sleep": (
        agent_spec(sleep, run_deadline_s=3 * 3600),
        [_input(1, "sleep 7200"), _input(2, "where is order o-1?")],
        _sleeper,
    ),
    "version_pinning": (
        # v2 is deployed while the first run waits for its model: it finishes on v1, and
        # the second input, queued meanwhile, runs on v2
        Rollout(((0, _V1), (1, SpecVersions((_V1, _V2))))),
        [_input(1, "where is order o-1?"), _input(2, "second")],
        respond,
    ),
    # --- agents working together: every agent of a team in one history -----------------------
    "delegation_parallel": (
        # the writer answers first, the researcher after a lookup; the parent's next model
        # call has both answers, in the order of its calls
        team(),
        [_asked(1, "ask_researcher ask_writer: where is o-1?")],
        TEAM_WORLD,
    ),
    "handoff": (
        # a root run hands off to refunds; then a delegated run hands off to the writer, which
        # answers the run that delegated
        team(),
        [
            _asked(1, "handoff_to_refunds: wants the money back"),
            _asked(2, "ask_researcher: handoff_to_writer: draft a reply"),
        ],
        TEAM_WORLD,
    ),
    "delegation_depth_limit": (
        team(researcher={"max_depth": 1}),
        [_asked(1, "ask_researcher: ask_writer: hi")],
        TEAM_WORLD,
    ),
    "delegation_cycle": (
        team(),
        [_asked(1, "ask_researcher: ask_triage: hi")],
        TEAM_WORLD,
    ),
    "delegation_budget": (
        # the researcher gets the 25 tokens its parent had left and needs 30; then two writer
        # runs within their caps take the parent past its 40
        team(triage={"max_tokens": 40}),
        [_asked(1, "ask_researcher: where is o-1?"), _asked(2, "ask_writer ask_writer: hi")],
        TEAM_WORLD,
    ),
}

#: The scenarios of several agents (processors.testing.drive plays one).
TEAM_SCENARIOS = frozenset(
    {
        "delegation_parallel",
        "handoff",
        "delegation_depth_limit",
        "delegation_cycle",
        "delegation_budget",
    }
)

#: The scenarios ``processors.testing.drive`` can play as they are: one spec, one reply per
#: request, and no output read back as an input (the others use a Rollout, several replies,
#: the processor reading back the facts it recorded, or several agents).
DRIVABLE = (
    frozenset(SCENARIOS)
    - TEAM_SCENARIOS
    - {
        "memory_followup",
        "pause_resume",
        "callback_wait",
        "version_pinning",
    }
)
