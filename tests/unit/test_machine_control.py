"""Steering a run: cancel, pause and resume, waits for callbacks and durable sleeps. No I/O: the
state machine, driven by hand."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from builders import T0, agent_input, cancel, input_at, paused, resumed
from world import (
    Agent,
    agent_spec,
    answer_with,
    await_payment,
    callback_done,
    collect_signature,
    model_answer,
    timer_fired,
    tool_result,
    waiting,
)

from agentstream.processors.core.machine import Applied, Decision, Rejected, run_id_of
from agentstream.processors.core.spec import ToolSpec, sleep
from agentstream.processors.core.state import AgentState
from agentstream.schemas.events import (
    AgentInput,
    ApprovalRequested,
    Event,
    ModelCallRequested,
    RunCancelled,
    RunFailed,
    TimerPurpose,
    TimerSet,
    ToolCallRequested,
)
from agentstream.schemas.reasons import DeadLetterReason, RunFailure

E = TypeVar("E", bound=Event)

#: the bookkeeping every applied event updates, whatever it did
_BOOKKEEPING = {"version", "recent_event_ids", "last_event_id", "updated_at"}


def only(decision: Decision, kind: type[E]) -> E:
    found = [e for e in decision.emits if isinstance(e, kind)]
    assert len(found) == 1, decision.emits
    return found[0]


def kinds(decision: Decision) -> list[str]:
    return [type(e).__name__ for e in decision.emits]


def _tool_messages(request: ModelCallRequested) -> list[dict[str, Any]]:
    return [m for m in json.loads(request.messages_json) if m["role"] == "tool"]


def _recorded_and_ignored(decision: Decision, before: AgentState, event: Event) -> None:
    assert isinstance(decision, Applied) and decision.emits == ()
    after = decision.state
    assert after.model_dump(exclude=_BOOKKEEPING) == before.model_dump(exclude=_BOOKKEEPING)
    assert after.has_applied(event.envelope.event_id)


def _state(agent: Agent) -> AgentState:
    assert agent.state is not None
    return agent.state


# --- Cancel ----------------------------------------------------------------------------------


def _running_with_queue() -> tuple[Agent, ModelCallRequested, AgentInput]:
    agent = Agent(agent_spec())
    request = only(agent.send(agent_input(text="first")), ModelCallRequested)
    second = input_at(T0 + timedelta(seconds=1), "second")
    assert agent.send(second).emits == ()
    return agent, request, second


@pytest.mark.parametrize("named", [False, True], ids=["run-id-none", "run-id"])
def test_cancelling_the_running_run_ends_it_and_starts_the_next_input(named: bool) -> None:
    agent, request, second = _running_with_queue()
    running = request.envelope.run_id
    decision = agent.send(cancel(running if named else None, at=T0 + timedelta(seconds=2)))
    assert kinds(decision) == ["RunCancelled", "ModelCallRequested"]
    cancelled = only(decision, RunCancelled)
    assert cancelled.envelope.run_id == running
    assert (cancelled.spec_version, cancelled.spec_hash) == (1, agent_spec().content_hash)
    assert (cancelled.cancelled_by, cancelled.reason, cancelled.steps) == ("ops", "asked twice", 1)
    state = _state(agent)
    assert state.run is not None and state.run.run_id == run_id_of(second.envelope.event_id)
    assert state.queue == () and state.runs_cancelled == 1 and state.cancelled_runs == (running,)
    next_call = only(decision, ModelCallRequested)
    assert json.loads(next_call.messages_json) == [{"role": "user", "content": "second"}]


def test_cancelling_a_queued_run_removes_it_and_the_running_one_goes_on() -> None:
    agent, _, second = _running_with_queue()
    before = _state(agent)
    queued_run = run_id_of(second.envelope.event_id)
    decision = agent.send(cancel(queued_run))
    assert kinds(decision) == ["RunCancelled"]
    assert only(decision, RunCancelled).envelope.run_id == queued_run
    state = _state(agent)
    assert state.queue == () and state.run == before.run
    assert state.cancelled_runs == (queued_run,) and state.runs_cancelled == 1


def test_a_result_after_the_cancel_is_recorded_and_ignored() -> None:
    agent, request, _ = _running_with_queue()
    agent.send(cancel())
    before = _state(agent)
    late = model_answer(request)
    _recorded_and_ignored(agent.send(late), before, late)


def test_cancelling_an_unknown_run_is_rejected() -> None:
    agent = Agent(agent_spec())
    idle = agent.send(cancel())
    assert isinstance(idle, Rejected) and idle.error_class is DeadLetterReason.UNKNOWN_RUN
    agent.send(agent_input())
    stranger = agent.send(cancel("no-such-run"))
    assert isinstance(stranger, Rejected) and stranger.error_class is DeadLetterReason.UNKNOWN_RUN


def test_a_second_cancel_of_the_same_run_changes_nothing() -> None:
    agent, request, _ = _running_with_queue()
    agent.send(cancel(request.envelope.run_id))
    before = _state(agent)
    again = cancel(request.envelope.run_id, at=T0 + timedelta(seconds=5))
    _recorded_and_ignored(agent.send(again), before, again)


# --- Pause and resume ------------------------------------------------------------------------


def test_while_paused_inputs_queue_and_no_run_starts() -> None:
    agent = Agent(agent_spec())
    agent.send(paused())
    decision = agent.send(agent_input(text="hi"))
    assert decision.emits == ()
    state = _state(agent)
    assert state.run is None and [q.text for q in state.queue] == ["hi"]
    assert state.status == "paused"
    started = agent.send(resumed())
    assert kinds(started) == ["ModelCallRequested"]
    assert _state(agent).status == "running" and _state(agent).queue == ()


def test_a_model_result_while_paused_holds_its_tool_calls_until_resumed() -> None:
    agent = Agent(agent_spec())
    request = only(agent.send(agent_input(text="refund please")), ModelCallRequested)
    agent.send(paused())
    held = agent.send(model_answer(request))
    assert held.emits == ()
    state = _state(agent)
    assert state.run is not None and {p.status for p in state.run.pending_tools} == {"held"}
    assert state.status == "paused"
    released = agent.send(resumed())
    assert kinds(released) == ["ToolCallRequested", "ApprovalRequested"]
    assert only(released, ToolCallRequested).tool == "lookup_order"
    assert only(released, ApprovalRequested).tool == "refund"
    assert _state(agent).status == "awaiting_approval"
    assert agent.send(resumed()).emits == ()  # dispatched once


def test_a_tool_result_while_paused_holds_the_next_model_call() -> None:
    agent = Agent(agent_spec())
    request = only(agent.send(agent_input(text="where is it")), ModelCallRequested)
    lookup = only(agent.send(model_answer(request)), ToolCallRequested)
    agent.send(paused())
    held = agent.send(tool_result(lookup))
    assert held.emits == ()
    run = _state(agent).run
    assert run is not None and run.held_model_call and run.steps == 1
    released = agent.send(resumed())
    assert kinds(released) == ["ModelCallRequested"]
    assert only(released, ModelCallRequested).step == 2
    assert agent.send(resumed()).emits == ()


def test_resuming_with_nothing_held_emits_nothing() -> None:
    agent = Agent(agent_spec())
    request = only(agent.send(agent_input(text="where is it")), ModelCallRequested)
    agent.send(paused())
    assert agent.send(resumed()).emits == ()  # the model call in flight is not asked again
    run = _state(agent).run
    assert run is not None and run.steps == 1 and run.pending_model_call == request.call_id
    assert kinds(agent.send(model_answer(request))) == ["ToolCallRequested"]


def test_pause_and_resume_are_idempotent() -> None:
    agent = Agent(agent_spec())
    agent.send(paused())
    before = _state(agent)
    again = paused(at=T0 + timedelta(seconds=1))
    _recorded_and_ignored(agent.send(again), before, again)
    agent.send(agent_input())
    assert kinds(agent.send(resumed())) == ["ModelCallRequested"]
    before = _state(agent)
    twice = resumed(at=T0 + timedelta(seconds=2))
    _recorded_and_ignored(agent.send(twice), before, twice)
    assert _state(agent).status == "running"


# --- Waits for a callback --------------------------------------------------------------------


#: the waiting tools and their argument
_PAYMENT = (await_payment, {"invoice": "i-1"})
_SIGNATURE = (collect_signature, {"document": "d-1"})


def _waiting_for(
    waits: tuple[ToolSpec, dict[str, object]], expires_in: timedelta, **budgets: object
) -> tuple[Agent, TimerSet]:
    """An agent whose run waits for callback cb-1 of the tool ``waits``; the timer it set.
    The worker's answer comes at T0 + 10 ms (two hops of 5 ms), and expires ``expires_in``
    after the request (T0 + 5 ms)."""
    tool, arguments = waits
    agent = Agent(agent_spec(tool, **budgets))
    request = only(agent.send(agent_input()), ModelCallRequested)
    call = only(agent.send(answer_with(request, (tool.name, arguments))), ToolCallRequested)
    answer = waiting(call, call.envelope.occurred_at + expires_in, "cb-1")
    timer = only(agent.send(answer), TimerSet)
    return agent, timer


@pytest.mark.parametrize(
    ("expires_in", "fire_at"),
    [
        (timedelta(minutes=30), T0 + timedelta(minutes=30, milliseconds=5)),
        (timedelta(hours=5), T0 + timedelta(hours=1)),  # the run's deadline comes first
    ],
    ids=["expiry", "run-deadline"],
)
def test_a_waiting_call_sets_a_timer_for_its_expiry_or_the_run_deadline(
    expires_in: timedelta, fire_at: datetime
) -> None:
    agent, timer = _waiting_for(_PAYMENT, expires_in, run_deadline_s=3600)
    assert timer.purpose is TimerPurpose.CALLBACK and timer.fire_at == fire_at
    run = _state(agent).run
    assert run is not None and run.pending_tools[0].callback_id == "cb-1"
    assert timer.call_id == run.pending_tools[0].call_id
    assert _state(agent).status == "waiting"


def test_the_callback_resolves_the_call_and_the_model_is_asked_again() -> None:
    agent, timer = _waiting_for(_PAYMENT, timedelta(minutes=30))
    done = agent.send(callback_done(timer, "cb-1", '{"paid": true}'))
    request = only(done, ModelCallRequested)
    assert request.step == 2
    assert _tool_messages(request)[-1]["content"] == '{"paid": true}'
    assert _state(agent).status == "running"
    # the timer still fires: its call ended, so it is recorded and ignored
    late = timer_fired(timer)
    _recorded_and_ignored(agent.send(late), _state(agent), late)


def test_an_unknown_callback_is_rejected() -> None:
    agent, timer = _waiting_for(_PAYMENT, timedelta(minutes=30))
    decision = agent.send(callback_done(timer, "cb-other", "{}"))
    assert isinstance(decision, Rejected)
    assert decision.error_class is DeadLetterReason.CALLBACK_NOT_PENDING


def test_a_callback_timer_that_fires_early_is_rejected() -> None:
    agent, timer = _waiting_for(_PAYMENT, timedelta(minutes=30))
    early = agent.send(timer_fired(timer, at=timer.fire_at - timedelta(milliseconds=1)))
    assert isinstance(early, Rejected) and early.error_class is DeadLetterReason.TIMER_NOT_DUE


@pytest.mark.parametrize("late", [timedelta(0), timedelta(seconds=1)], ids=["at", "after"])
def test_a_callback_timed_out_fails_the_run_when_the_tool_says_so(late: timedelta) -> None:
    agent, timer = _waiting_for(_PAYMENT, timedelta(minutes=30))
    decision = agent.send(timer_fired(timer, at=timer.fire_at + late))
    failed = only(decision, RunFailed)
    assert failed.error_class == RunFailure.CALLBACK_TIMED_OUT and "cb-1" in failed.reason
    assert _state(agent).run is None


def test_a_callback_timed_out_is_reported_to_the_model_when_the_tool_says_so() -> None:
    agent, timer = _waiting_for(_SIGNATURE, timedelta(minutes=30))
    request = only(agent.send(timer_fired(timer)), ModelCallRequested)
    error = json.loads(_tool_messages(request)[-1]["content"])
    assert error["error_class"] == RunFailure.CALLBACK_TIMED_OUT and "cb-1" in error["error"]
    assert _state(agent).runs_failed == 0


# --- Durable sleep ---------------------------------------------------------------------------


def _asleep(arguments: dict[str, object], deadline_s: float = 3 * 3600) -> tuple[Agent, Decision]:
    agent = Agent(agent_spec(sleep, run_deadline_s=deadline_s))
    request = only(agent.send(agent_input(text="wait")), ModelCallRequested)
    return agent, agent.send(answer_with(request, ("sleep", arguments)))


def test_sleep_sets_a_timer_and_its_firing_wakes_the_run() -> None:
    agent, decision = _asleep({"seconds": 7200})
    timer = only(decision, TimerSet)
    assert kinds(decision) == ["TimerSet"]
    slept_from: datetime = timer.envelope.occurred_at  # the model's answer
    assert timer.purpose is TimerPurpose.SLEEP
    assert timer.fire_at == slept_from + timedelta(hours=2)
    assert _state(agent).status == "sleeping"
    woke = agent.send(timer_fired(timer))
    request = only(woke, ModelCallRequested)
    assert request.step == 2
    slept = json.loads(_tool_messages(request)[-1]["content"])
    assert slept == {"slept_until": timer.fire_at.isoformat()}
    assert _state(agent).status == "running"


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"seconds": 4 * 3600}, "deadline"),
        ({"until": "2026-01-01T04:00:00+00:00"}, "deadline"),
        ({}, "either seconds or until"),
        ({"seconds": 60, "until": "2026-01-01T01:00:00+00:00"}, "either seconds or until"),
        ({"until": "2026-01-01T01:00:00"}, "UTC offset"),
        ({"seconds": -1}, "0 or more"),
    ],
)
def test_a_sleep_that_cannot_be_kept_answers_the_model_with_an_error(
    arguments: dict[str, object], error: str
) -> None:
    agent, decision = _asleep(arguments)
    assert kinds(decision) == ["ModelCallRequested"]
    message = json.loads(_tool_messages(only(decision, ModelCallRequested))[-1]["content"])
    assert error in message["error"]
    assert _state(agent).status == "running"


def test_a_sleep_is_held_while_paused_and_starts_when_resumed() -> None:
    agent = Agent(agent_spec(sleep, run_deadline_s=3 * 3600))
    request = only(agent.send(agent_input(text="wait")), ModelCallRequested)
    agent.send(paused())
    assert agent.send(answer_with(request, ("sleep", {"seconds": 60}))).emits == ()
    at = T0 + timedelta(minutes=5)
    timer = only(agent.send(resumed(at=at)), TimerSet)
    assert timer.fire_at == at + timedelta(seconds=60)  # from the resume on
