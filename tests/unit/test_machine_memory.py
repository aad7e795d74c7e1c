"""What an agent keeps across runs: past turns, facts (the ``remember`` tool and operators'
MemoryRecorded), and their erasure. No I/O: the state machine and the scripted world."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from builders import T0, agent_input, cancel, erased, input_at, recorded
from world import CHAT_WORLD, Agent, agent_spec, answer_with

from agentstream.processors.core.machine import Applied, Decision, Rejected
from agentstream.processors.core.memory import ERASED
from agentstream.processors.core.spec import AgentSpec, Memory, remember
from agentstream.schemas.events import (
    Event,
    MemoryRecorded,
    ModelCallFailed,
    ModelCallRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
)
from agentstream.schemas.reasons import DeadLetterReason


def _spec(**memory: Any) -> AgentSpec:
    return agent_spec(remember, memory=Memory(**memory))


def _request(decision: Decision | list[Event]) -> ModelCallRequested:
    emits = decision if isinstance(decision, list) else decision.emits
    found = [e for e in emits if isinstance(e, ModelCallRequested)]
    assert len(found) == 1, emits
    return found[0]


def _messages(request: ModelCallRequested) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = json.loads(request.messages_json)
    return messages


def _complete(agent: Agent, text: str, seconds: int = 0) -> RunCompleted:
    """Run ``text`` to its end on an idle agent; its outcome."""
    emitted = agent.settle(agent.send(input_at(T0 + timedelta(seconds=seconds), text)))
    outcome = emitted[-1]
    assert isinstance(outcome, RunCompleted), emitted
    return outcome


def _facts_read_back(agent: Agent, emitted: list[Event]) -> None:
    """Apply the MemoryRecorded a run emitted, as the processor does when it reads them back."""
    for event in emitted:
        if isinstance(event, MemoryRecorded):
            assert isinstance(agent.send(event), Applied)


# --- Conversation ----------------------------------------------------------------------------


def test_the_next_run_starts_with_the_previous_question_and_answer() -> None:
    agent = Agent(_spec(turns=2))
    first = _complete(agent, "where is my order?")
    second = _request(agent.send(input_at(T0 + timedelta(minutes=1), "and when will it come?")))
    assert _messages(second) == [
        {"role": "user", "content": "where is my order?"},
        {"role": "assistant", "content": first.output},
        {"role": "user", "content": "and when will it come?"},
    ]


def test_turns_zero_keeps_nothing() -> None:
    agent = Agent(_spec(turns=0))
    _complete(agent, "where is my order?")
    assert agent.state is not None and agent.state.conversation == ()
    second = _request(agent.send(input_at(T0 + timedelta(minutes=1), "and now?")))
    assert _messages(second) == [{"role": "user", "content": "and now?"}]


def test_the_oldest_turns_drop_past_turns() -> None:
    agent = Agent(_spec(turns=2))
    for n, text in enumerate(["one", "two", "three"]):
        _complete(agent, text, seconds=n)
    assert agent.state is not None
    assert [turn.messages[0].content for turn in agent.state.conversation] == ["two", "three"]
    fourth = _messages(_request(agent.send(input_at(T0 + timedelta(minutes=1), "four"))))
    assert [m["content"] for m in fourth if m["role"] == "user"] == ["two", "three", "four"]


def test_the_oldest_turns_drop_past_max_bytes() -> None:
    agent = Agent(_spec(turns=10, max_bytes=700))
    _complete(agent, "a" * 200)
    assert agent.state is not None and len(agent.state.conversation) == 1
    first_size = agent.state.conversation[0].size
    _complete(agent, "b" * 200, seconds=1)
    conversation = agent.state.conversation
    assert len(conversation) == 1 and conversation[0].messages[0].content == "b" * 200
    assert first_size + conversation[0].size > 700  # both together are over the bound
    third = _messages(_request(agent.send(input_at(T0 + timedelta(minutes=1), "c"))))
    assert third[0]["content"] == "b" * 200 and len(third) == 3


def test_tool_results_keeps_the_runs_tool_calls_and_results() -> None:
    agent = Agent(_spec(turns=2, tool_results=True))
    emitted = agent.settle(agent.send(agent_input(text="where is my order?")))
    last_request, outcome = emitted[-2], emitted[-1]
    assert isinstance(last_request, ModelCallRequested) and isinstance(outcome, RunCompleted)
    first_run = [*_messages(last_request), {"role": "assistant", "content": outcome.output}]
    assert [m["role"] for m in first_run] == ["user", "assistant", "tool", "assistant"]
    second = _messages(_request(agent.send(input_at(T0 + timedelta(minutes=1), "and now?"))))
    assert second == [*first_run, {"role": "user", "content": "and now?"}]


def test_failed_and_cancelled_runs_add_no_turn() -> None:
    agent = Agent(_spec(turns=5))
    kept = _complete(agent, "kept")
    failing = _request(agent.send(input_at(T0 + timedelta(seconds=1), "fails")))
    failure = ModelCallFailed(
        envelope=CHAT_WORLD.envelope(failing, "fail"),
        call_id=failing.call_id,
        provider="p",
        model="m",
        attempts=3,
        error_class="RateLimited",
        error_message="429",
    )
    assert any(isinstance(e, RunFailed) for e in agent.send(failure).emits)
    agent.send(input_at(T0 + timedelta(seconds=2), "cancelled"))
    assert any(isinstance(e, RunCancelled) for e in agent.send(cancel()).emits)
    assert agent.state is not None and len(agent.state.conversation) == 1
    last = _messages(_request(agent.send(input_at(T0 + timedelta(seconds=3), "last"))))
    assert last == [
        {"role": "user", "content": "kept"},
        {"role": "assistant", "content": kept.output},
        {"role": "user", "content": "last"},
    ]


# --- Facts -----------------------------------------------------------------------------------


def test_remember_emits_a_memory_recorded_and_answers_the_model_at_once() -> None:
    agent = Agent(_spec(turns=2))
    request = _request(agent.send(agent_input(text="hi")))
    decision = agent.send(answer_with(request, ("remember", {"key": "lang", "value": "Dutch"})))
    assert [type(e).__name__ for e in decision.emits] == ["MemoryRecorded", "ModelCallRequested"]
    fact = decision.emits[0]
    assert isinstance(fact, MemoryRecorded)
    assert (fact.key, fact.value, fact.recorded_by) == ("lang", "Dutch", "agent:agent-1")
    assert fact.envelope.run_id == request.envelope.run_id
    tool_message = _messages(_request(decision))[-1]
    assert tool_message["role"] == "tool" and tool_message["name"] == "remember"
    assert json.loads(tool_message["content"]) == {"remembered": "lang"}
    # not kept until it is read back, like a fact from anyone else
    assert agent.state is not None and agent.state.facts == ()


def test_a_fact_read_back_is_kept_and_told_to_the_model() -> None:
    agent = Agent(_spec())
    emitted = agent.settle(agent.send(agent_input(text="remember lang=Dutch")))
    _facts_read_back(agent, emitted)
    assert agent.state is not None
    fact = agent.state.fact("lang")
    assert fact is not None and fact.value == "Dutch" and fact.recorded_by == "agent:agent-1"
    request = _request(agent.send(input_at(T0 + timedelta(minutes=1), "what do you know?")))
    assert request.system_prompt == (
        "Be helpful.\n\nWhat you remember from earlier conversations:\n- lang: Dutch"
    )


def test_a_fact_under_the_same_key_replaces_the_old_one() -> None:
    agent = Agent(_spec())
    for n, (key, value) in enumerate([("lang", "Dutch"), ("city", "Ghent"), ("lang", "French")]):
        agent.send(recorded(key, value, at=T0 + timedelta(seconds=n)))
    assert agent.state is not None
    assert [(f.key, f.value) for f in agent.state.facts] == [("city", "Ghent"), ("lang", "French")]


def test_past_max_facts_the_oldest_fact_drops() -> None:
    agent = Agent(_spec(max_facts=2))
    for key in ("a", "b", "c"):
        agent.send(recorded(key, key.upper()))
    assert agent.state is not None and [f.key for f in agent.state.facts] == ["b", "c"]


@pytest.mark.parametrize(
    ("memory", "value"),
    [
        ({"max_fact_bytes": 10}, "é" * 6),  # 6 characters, 12 bytes
        ({"max_facts": 0}, "Dutch"),
    ],
    ids=["too-large", "disabled"],
)
def test_a_fact_too_large_or_not_kept_is_refused(memory: dict[str, int], value: str) -> None:
    agent = Agent(_spec(**memory))
    before = agent.send(agent_input()).state
    decision = agent.send(recorded("lang", value))
    assert isinstance(decision, Rejected)
    assert decision.error_class is DeadLetterReason.MEMORY_REFUSED
    assert decision.state == before


@pytest.mark.parametrize(
    ("arguments", "memory", "error"),
    [
        ({"key": "", "value": "x"}, {}, "key must be text"),
        ({"value": "x"}, {}, "key must be text"),
        ({"key": "lang", "value": 3}, {}, "value must be text"),
        ({"key": "lang", "value": "x" * 11}, {"max_fact_bytes": 10}, "over 10 bytes"),
        ({"key": "lang", "value": "x"}, {"max_facts": 0}, "keeps no facts"),
    ],
)
def test_remember_with_bad_arguments_answers_the_model_with_an_error(
    arguments: dict[str, object], memory: dict[str, int], error: str
) -> None:
    agent = Agent(_spec(**memory))
    request = _request(agent.send(agent_input()))
    decision = agent.send(answer_with(request, ("remember", arguments)))
    assert [type(e).__name__ for e in decision.emits] == ["ModelCallRequested"]
    tool_message = _messages(_request(decision))[-1]
    assert tool_message["role"] == "tool"
    assert error in json.loads(tool_message["content"])["error"]


# --- Erasure ---------------------------------------------------------------------------------

SECRET = 'Zoë "Z" Quinn'


def _agent_that_knows_the_secret() -> tuple[Agent, ModelCallRequested]:
    """An agent that recorded SECRET with the remember tool, and kept the run that did it
    (tool calls and all) in its conversation; a second run is waiting for the model."""
    agent = Agent(_spec(turns=3, tool_results=True))
    _facts_read_back(agent, agent.settle(agent.send(agent_input(text=f"remember name={SECRET}"))))
    agent.send(recorded("city", "Ghent"))
    request = _request(agent.send(input_at(T0 + timedelta(minutes=1), "what is my name?")))
    assert "Quinn" in request.messages_json
    return agent, request


def test_erasing_a_fact_scrubs_it_from_the_conversation_and_the_running_run() -> None:
    agent, request = _agent_that_knows_the_secret()
    assert agent.state is not None and "Quinn" in agent.state.to_json()
    assert isinstance(agent.send(erased("name")), Applied)
    state = agent.state
    assert state.fact("name") is None and [f.key for f in state.facts] == ["city"]
    assert "Quinn" not in state.to_json()
    assert state.run is not None and ERASED in str(state.run.messages[0].content)
    assert ERASED in str(state.conversation[0].messages[0].content)
    # what the model is asked next is built from the scrubbed run
    nxt = _request(agent.send(answer_with(request, ("no_such_tool", {}))))
    assert "Quinn" not in nxt.messages_json


def test_erasing_everything_clears_facts_and_conversation() -> None:
    agent, _ = _agent_that_knows_the_secret()
    agent.send(erased(None))
    state = agent.state
    assert state is not None and state.facts == () and state.conversation == ()
    assert "Quinn" not in state.to_json() and "Ghent" not in state.to_json()
    request = _request(agent.send(input_at(T0 + timedelta(hours=2), "anyone there?")))
    assert request.system_prompt == "Be helpful."
