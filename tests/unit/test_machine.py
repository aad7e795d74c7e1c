"""The agent state machine, with no I/O: runs, queues, budgets, approvals, rejections."""

from __future__ import annotations

import json
from collections import deque
from datetime import timedelta
from typing import TypeVar

import pytest
from builders import T0, agent_input, envelope
from pydantic import ValidationError
from world import approve, model_answer, respond, support_spec, tool_result

from agentstream.processors.core.machine import Decision, Duplicate, Rejected, transition
from agentstream.processors.core.spec import AgentSpec
from agentstream.processors.core.state import AgentState, evolve
from agentstream.schemas.events import (
    AgentInput,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalRequested,
    Event,
    ModelCallCompleted,
    ModelCallFailed,
    ModelCallRequested,
    RunCompleted,
    RunFailed,
    TokenUsage,
    ToolCallFailed,
    ToolCallIntent,
    ToolCallRequested,
)

SPEC = support_spec()


def drive(spec: AgentSpec, inputs: list[AgentInput]) -> tuple[AgentState | None, list[Event]]:
    """Feed inputs, answer every request with the scripted world until nothing is left."""
    state: AgentState | None = None
    queue: deque[Event] = deque(inputs)
    history: list[Event] = []
    while queue:
        event = queue.popleft()
        decision = transition(state, event, spec)
        assert not isinstance(decision, Rejected), decision
        state = decision.state
        history += decision.emits
        for emitted in decision.emits:
            reply = respond(emitted)
            if reply is not None:
                queue.append(reply)
    return state, history


E = TypeVar("E", bound=Event)


def only(decision: Decision, kind: type[E]) -> E:
    found = [e for e in decision.emits if isinstance(e, kind)]
    assert len(found) == 1, decision.emits
    return found[0]


def test_a_full_run_requests_model_then_tool_then_model_then_completes() -> None:
    state, history = drive(SPEC, [agent_input(text="where is my order?")])
    kinds = [type(e).__name__ for e in history]
    assert kinds == [
        "ModelCallRequested",
        "ToolCallRequested",
        "ModelCallRequested",
        "RunCompleted",
    ]
    outcome = history[-1]
    assert isinstance(outcome, RunCompleted)
    assert outcome.steps == 2 and outcome.tool_calls == 1
    assert outcome.usage == TokenUsage(prompt_tokens=20, completion_tokens=10)
    assert outcome.output.startswith("done after 1 tool result(s)")
    assert state is not None and state.status == "idle" and state.runs_completed == 1
    second_call = history[2]
    assert isinstance(second_call, ModelCallRequested)
    roles = [m["role"] for m in json.loads(second_call.messages_json)]
    assert roles == ["user", "assistant", "tool"]
    # every emitted event of the run shares the run id and the correlation id (the input's id)
    assert len({e.envelope.run_id for e in history}) == 1
    assert {e.envelope.correlation_id for e in history} == {history[0].envelope.correlation_id}


def test_inputs_during_a_run_are_queued_and_run_next_in_order() -> None:
    first, second, third = (agent_input(text=t) for t in ("one", "two", "three"))
    d1 = transition(None, first, SPEC)
    d2 = transition(d1.state, second, SPEC)
    d3 = transition(d2.state, third, SPEC)
    assert d2.emits == () and d3.emits == ()
    assert [q.text for q in d3.state.queue] == ["two", "three"]
    state, history = drive(SPEC, [first, second, third])
    outputs = [e.output for e in history if isinstance(e, RunCompleted)]
    assert [o.rsplit(": ", 1)[1] for o in outputs] == ["one", "two", "three"]
    assert state is not None and state.queue == () and state.runs_completed == 3


def test_redelivered_events_change_nothing() -> None:
    event = agent_input()
    d1 = transition(None, event, SPEC)
    d2 = transition(d1.state, event, SPEC)
    assert isinstance(d2, Duplicate) and d2.emits == () and d2.state == d1.state
    answer = model_answer(only(d1, ModelCallRequested))
    d3 = transition(d1.state, answer, SPEC)
    d4 = transition(d3.state, answer, SPEC)
    assert isinstance(d4, Duplicate) and d4.state == d3.state and d4.emits == ()


def test_results_for_unknown_or_finished_calls_are_rejected_not_applied() -> None:
    d1 = transition(None, agent_input(), SPEC)
    request = only(d1, ModelCallRequested)
    assert isinstance(request, ModelCallRequested)
    d2 = transition(d1.state, model_answer(request), SPEC)
    tool_request = only(d2, ToolCallRequested)
    assert isinstance(tool_request, ToolCallRequested)

    stranger = tool_result(tool_request).model_copy(update={"call_id": "no-such-call"})
    rejected = transition(d2.state, stranger, SPEC)
    assert isinstance(rejected, Rejected) and rejected.error_class == "unknown_call"
    assert rejected.state == d2.state and rejected.emits == ()

    again = model_answer(request).model_copy(
        update={"envelope": envelope(run_id=request.envelope.run_id)}
    )
    late = transition(d2.state, again, SPEC)
    assert isinstance(late, Rejected) and late.error_class == "finished_call"

    no_run = transition(None, tool_result(tool_request), SPEC)
    assert isinstance(no_run, Rejected) and no_run.error_class == "unknown_run"


def test_outputs_of_the_processor_are_not_accepted_as_inputs() -> None:
    d1 = transition(None, agent_input(), SPEC)
    echoed = transition(d1.state, d1.emits[0], SPEC)
    assert isinstance(echoed, Rejected) and echoed.error_class == "not_an_input"


def _looping_model(request: ModelCallRequested, usage: int = 1) -> ModelCallCompleted:
    """A model that always asks for one more lookup."""
    answer = model_answer(request)
    return answer.model_copy(
        update={
            "content": None,
            "tool_calls": [
                ToolCallIntent(
                    tool_call_id=f"tc-{request.step}",
                    tool="lookup_order",
                    arguments_json='{"order_id": "o"}',
                )
            ],
            "usage": TokenUsage(prompt_tokens=usage, completion_tokens=0),
        }
    )


def _run_looping(spec: AgentSpec, usage: int = 1) -> list[Event]:
    state: AgentState | None = None
    queue: deque[Event] = deque([agent_input()])
    emitted: list[Event] = []
    while queue:
        decision = transition(state, queue.popleft(), spec)
        state = decision.state
        emitted += decision.emits
        for e in decision.emits:
            if isinstance(e, ModelCallRequested):
                queue.append(_looping_model(e, usage))
            elif isinstance(e, ToolCallRequested):
                queue.append(tool_result(e))
    return emitted


def test_budgets_end_a_looping_run_as_failed_with_the_reason() -> None:
    steps = _run_looping(support_spec(max_steps=3))
    failed = steps[-1]
    assert isinstance(failed, RunFailed)
    assert failed.error_class == "budget_exceeded" and "max_steps" in failed.reason
    assert sum(isinstance(e, ModelCallRequested) for e in steps) == 3

    tools = _run_looping(support_spec(max_tool_calls=2))[-1]
    assert isinstance(tools, RunFailed) and "max_tool_calls" in tools.reason

    tokens = _run_looping(support_spec(max_tokens=250), usage=100)[-1]
    assert isinstance(tokens, RunFailed) and "max_tokens" in tokens.reason


def test_the_deadline_fails_the_run_when_a_late_event_arrives() -> None:
    spec = support_spec(run_deadline_s=60)
    d1 = transition(None, agent_input(), spec)
    request = only(d1, ModelCallRequested)
    late = model_answer(request)
    late = late.model_copy(
        update={
            "envelope": late.envelope.model_copy(update={"occurred_at": T0 + timedelta(seconds=61)})
        }
    )
    d2 = transition(d1.state, late, spec)
    failed = only(d2, RunFailed)
    assert isinstance(failed, RunFailed) and failed.error_class == "deadline_exceeded"
    assert d2.state.run is None


def test_model_failure_fails_the_run_and_the_next_queued_input_starts() -> None:
    d1 = transition(None, agent_input(text="first"), SPEC)
    d2 = transition(d1.state, agent_input(text="second"), SPEC)
    request = only(d1, ModelCallRequested)
    failure = ModelCallFailed(
        envelope=envelope(run_id=request.envelope.run_id),
        call_id=request.call_id,
        provider="p",
        model="m",
        attempts=3,
        error_class="RateLimited",
        error_message="429",
    )
    d3 = transition(d2.state, failure, SPEC)
    assert [type(e).__name__ for e in d3.emits] == ["RunFailed", "ModelCallRequested"]
    failed = d3.emits[0]
    assert isinstance(failed, RunFailed) and "RateLimited" in failed.reason
    assert d3.state.run is not None and d3.state.queue == ()


def _to_tool_step(
    spec: AgentSpec, text: str = "please refund"
) -> tuple[Decision, ModelCallCompleted]:
    d1 = transition(None, agent_input(text=text), spec)
    answer = model_answer(only(d1, ModelCallRequested))
    return transition(d1.state, answer, spec), answer


def test_tool_failure_fails_the_run_by_default_with_the_reason() -> None:
    d2, _ = _to_tool_step(SPEC, "where is it")
    request = only(d2, ToolCallRequested)
    assert isinstance(request, ToolCallRequested)
    failure = ToolCallFailed(
        envelope=envelope(run_id=request.envelope.run_id),
        call_id=request.call_id,
        tool=request.tool,
        attempts=3,
        error_class="TimeoutError",
        error_message="took too long",
    )
    d3 = transition(d2.state, failure, SPEC)
    failed = only(d3, RunFailed)
    assert isinstance(failed, RunFailed) and failed.error_class == "tool_failed"
    assert "after 3 attempt(s)" in failed.reason and "TimeoutError" in failed.reason


def test_a_gated_tool_waits_for_approval_and_a_grant_resumes_it() -> None:
    d2, _ = _to_tool_step(SPEC)
    approval = only(d2, ApprovalRequested)
    assert isinstance(approval, ApprovalRequested)
    assert approval.expires_at == T0 + timedelta(hours=1)  # capped by the run's deadline
    assert d2.state.status == "awaiting_approval"
    lookup = only(d2, ToolCallRequested)
    d3 = transition(d2.state, tool_result(lookup), SPEC)
    assert d3.emits == ()  # still waiting for the approval
    d4 = transition(d3.state, approve(approval), SPEC)
    refund_request = only(d4, ToolCallRequested)
    assert isinstance(refund_request, ToolCallRequested)
    assert refund_request.call_id == approval.call_id
    assert refund_request.arguments_hash == approval.arguments_hash
    d5 = transition(d4.state, tool_result(refund_request), SPEC)
    next_call = only(d5, ModelCallRequested)
    tool_messages = [m for m in json.loads(next_call.messages_json) if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["tc-1", "tc-2"]  # the model's order


def test_wrong_hash_second_decision_and_late_decision_are_rejected() -> None:
    spec = support_spec(run_deadline_s=7 * 86400, approval_timeout_s=600)
    d2, _ = _to_tool_step(spec)
    approval = only(d2, ApprovalRequested)
    assert isinstance(approval, ApprovalRequested)
    forged = approve(approval).model_copy(update={"arguments_hash": "0" * 64})
    wrong = transition(d2.state, forged, spec)
    assert isinstance(wrong, Rejected) and wrong.error_class == "approval_hash_mismatch"

    granted = transition(d2.state, approve(approval), spec)
    second = approve(approval, approver="bob").model_copy(
        update={"envelope": envelope(run_id=approval.envelope.run_id)}
    )
    replay = transition(granted.state, second, spec)
    assert isinstance(replay, Rejected) and replay.error_class == "approval_not_pending"

    late = approve(approval)
    late = late.model_copy(
        update={
            "envelope": late.envelope.model_copy(
                update={"occurred_at": approval.expires_at + timedelta(seconds=1)}
            )
        }
    )
    too_late = transition(d2.state, late, spec)
    assert isinstance(too_late, Rejected) and too_late.error_class == "approval_expired"


def test_denial_and_expiry_are_reported_to_the_model() -> None:
    d2, _ = _to_tool_step(SPEC)
    approval = only(d2, ApprovalRequested)
    lookup = only(d2, ToolCallRequested)
    assert isinstance(approval, ApprovalRequested)
    d3 = transition(d2.state, tool_result(lookup), SPEC)
    base = dict(call_id=approval.call_id, arguments_hash=approval.arguments_hash)
    denied = ApprovalDenied(
        envelope=envelope(run_id=approval.envelope.run_id), approver="bob", comment="no", **base
    )
    d4 = transition(d3.state, denied, SPEC)
    call = only(d4, ModelCallRequested)
    refund_msg = next(m for m in json.loads(call.messages_json) if m.get("name") == "refund")
    assert json.loads(refund_msg["content"])["error"] == "denied by approver"

    early = ApprovalExpired(envelope=envelope(run_id=approval.envelope.run_id), **base)
    assert isinstance(transition(d3.state, early, SPEC), Rejected)
    expired = ApprovalExpired(
        envelope=envelope(run_id=approval.envelope.run_id, occurred_at=approval.expires_at), **base
    )
    d5 = transition(d3.state, expired, SPEC)
    call = only(d5, ModelCallRequested)
    refund_msg = next(m for m in json.loads(call.messages_json) if m.get("name") == "refund")
    assert json.loads(refund_msg["content"])["error"] == "approval expired"


def test_unknown_tools_and_bad_arguments_are_reported_to_the_model_without_a_call() -> None:
    d1 = transition(None, agent_input(), SPEC)
    request = only(d1, ModelCallRequested)
    answer = model_answer(request).model_copy(
        update={
            "tool_calls": [
                ToolCallIntent(tool_call_id="a", tool="rm_rf", arguments_json="{}"),
                ToolCallIntent(tool_call_id="b", tool="lookup_order", arguments_json="[1, 2"),
            ]
        }
    )
    d2 = transition(d1.state, answer, SPEC)
    call = only(d2, ModelCallRequested)
    errors = [
        json.loads(m["content"])["error"]
        for m in json.loads(call.messages_json)
        if m["role"] == "tool"
    ]
    assert "unknown tool 'rm_rf'" in errors[0]
    assert "not valid JSON" in errors[1]


def test_state_round_trips_through_its_snapshot_json() -> None:
    d2, _ = _to_tool_step(SPEC)
    assert AgentState.from_json(d2.state.to_json()) == d2.state


def test_evolve_is_model_copy_with_an_update() -> None:
    d2, _ = _to_tool_step(SPEC)
    state = d2.state
    assert state.run is not None and state.run.pending_tools
    pending = state.run.pending_tools[0]
    for value, update in [
        (state, {"version": 99, "last_event_id": "e-1", "run": None}),
        (state.run, {"steps": 7, "pending_tools": ()}),
        (pending, {"status": "awaiting_approval", "tool": "other"}),
    ]:
        copied, expected = evolve(value, **update), value.model_copy(update=update)
        assert copied == expected
        assert copied.model_fields_set == expected.model_fields_set
        assert copied.model_dump_json() == expected.model_dump_json()
        assert value != copied  # the original is left as it was
        with pytest.raises(ValidationError):  # and the copy is as frozen
            copied.__setattr__(next(iter(update)), None)


def test_nothing_a_run_emits_is_stamped_before_the_run_started() -> None:
    first = agent_input()
    d1 = transition(None, first, SPEC)
    request = only(d1, ModelCallRequested)
    # A worker whose clock is an hour behind answers.
    answer = model_answer(request)
    early = answer.envelope.model_copy(
        update={"occurred_at": first.envelope.occurred_at - timedelta(hours=1)}
    )
    d2 = transition(d1.state, answer.model_copy(update={"envelope": early}), SPEC)
    assert d2.emits, "the answer asked for a tool"
    started = first.envelope.occurred_at
    assert all(e.envelope.occurred_at >= started for e in d2.emits)
