"""The scripted model: deterministic rules, and the demo support agent and team driven to their
answers."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from builders import T0, agent_input

from agentstream.processors.control.approvals import decide
from agentstream.processors.core.ids import canonical_json, derived_id
from agentstream.processors.core.machine import Rejected, transition
from agentstream.processors.core.state import AgentState
from agentstream.processors.errors import ProviderError
from agentstream.processors.examples import support_agent, team
from agentstream.processors.workers.model_adapters import ModelRequest
from agentstream.processors.workers.model_scripted import ScriptedModel
from agentstream.schemas.events import (
    AgentInput,
    ApprovalRequested,
    DelegationReturned,
    Envelope,
    Event,
    ModelCallCompleted,
    ModelCallRequested,
    RunCompleted,
    RunHandedOff,
    ToolCallCompleted,
    ToolCallRequested,
)

DEMO_TEXT = "Where is order o-1001? I want a refund, and how do returns work?"


def ask(messages: list[dict[str, Any]], **parameters: Any) -> ModelRequest:
    return ModelRequest(
        call_id="c",
        model="support-script",
        system_prompt="",
        messages=messages,
        parameters=parameters,
    )


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def test_the_first_matching_rule_becomes_a_tool_call() -> None:
    reply = ScriptedModel().reply(ask([user("status of o-1002 please")]))
    assert reply.content is None
    [call] = reply.tool_calls
    assert (call.tool, json.loads(call.arguments_json)) == ("lookup_order", {"order_id": "o-1002"})
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0


def test_no_matching_rule_gives_a_final_answer() -> None:
    reply = ScriptedModel().reply(ask([user("hello there")]))
    assert reply.tool_calls == []
    assert reply.content and "How can I help" in reply.content


def test_same_conversation_same_reply() -> None:
    request = ask([user(DEMO_TEXT)])
    assert ScriptedModel().reply(request) == ScriptedModel().reply(request)


def test_placeholders_from_tool_results_keep_their_type() -> None:
    script = {
        "rules": [
            {"when": "go", "tool": "a", "arguments": {}},
            {"when": "go", "tool": "b", "arguments": {"n": "{result.a.n}", "s": "n={result.a.n}"}},
        ]
    }
    messages = [
        user("go"),
        {"role": "assistant", "content": None, "tool_calls": [{"id": "rule-0-a"}]},
        {"role": "tool", "tool_call_id": "rule-0-a", "name": "a", "content": '{"n": 4}'},
    ]
    [call] = ScriptedModel().reply(ask(messages, script=script)).tool_calls
    assert json.loads(call.arguments_json) == {"n": 4, "s": "n=4"}


def test_a_rule_whose_placeholders_do_not_resolve_is_skipped() -> None:
    script = {"rules": [{"when": "go", "tool": "b", "arguments": {"n": "{result.a.n}"}}]}
    reply = ScriptedModel().reply(ask([user("go")], script=script))
    assert reply.tool_calls == [] and reply.content


GROUPED = {
    "rules": [
        {"when": "solo", "tool": "alone", "arguments": {}},
        {
            "when": r"(?P<order_id>o-\d+)",
            "tool": "ask_a",
            "arguments": {"task": "{order_id}"},
            "group": "g",
        },
        {"when": "never", "tool": "ask_x", "arguments": {}, "group": "g"},
        {"when": "return", "tool": "ask_b", "arguments": {"task": "{text}"}, "group": "g"},
        {"when": "return", "tool": "later", "arguments": {}},
    ]
}


def _called(reply: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(c.tool, json.loads(c.arguments_json)) for c in reply.tool_calls]


def test_rules_of_one_group_fire_together_in_one_reply() -> None:
    text = "o-1 and a return"
    reply = ScriptedModel().reply(ask([user(text)], script=GROUPED))
    # the group's matching rules only: not the one that does not match, nor the ungrouped one
    assert _called(reply) == [("ask_a", {"task": "o-1"}), ("ask_b", {"task": text})]
    assert len({c.tool_call_id for c in reply.tool_calls}) == 2
    answered = [
        user(text),
        {"role": "assistant", "content": None, "tool_calls": [{"id": "rule-1-ask_a"}]},
        {"role": "tool", "tool_call_id": "rule-1-ask_a", "name": "ask_a", "content": '"A"'},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "rule-3-ask_b"}]},
        {"role": "tool", "tool_call_id": "rule-3-ask_b", "name": "ask_b", "content": '"B."'},
    ]
    # once the group was called, the next rule in order fires on its own
    assert _called(ScriptedModel().reply(ask(answered, script=GROUPED))) == [("later", {})]


def test_an_ungrouped_rule_that_fires_first_keeps_the_group_out() -> None:
    reply = ScriptedModel().reply(ask([user("solo o-1 return")], script=GROUPED))
    assert _called(reply) == [("alone", {})]


def test_a_group_with_one_matching_rule_is_one_call() -> None:
    reply = ScriptedModel().reply(ask([user("a return")], script=GROUPED))
    assert _called(reply) == [("ask_b", {"task": "a return"})]


def test_unknown_scripts_and_bad_inline_scripts_are_provider_errors() -> None:
    with pytest.raises(ProviderError):
        ScriptedModel().reply(ModelRequest("c", "nope", "", [user("x")]))
    with pytest.raises(ProviderError):
        ScriptedModel().reply(ask([user("x")], script={"rules": [{"tool": "a"}]}))
    assert asyncio.run(ScriptedModel().complete(ask([user("hi")]))).content


def _reply_envelope(request: Event, purpose: str, at: int) -> Envelope:
    cause = request.envelope
    return cause.model_copy(
        update={
            "event_id": derived_id(cause.event_id, purpose),
            "causation_id": cause.event_id,
            "occurred_at": T0 + timedelta(milliseconds=at),
            "source": "test",
        }
    )


def _world(request: Event, at: int, tools_called: list[str]) -> Event | None:
    """What the model, the tools and an approver send back, using the real demo tools."""
    if isinstance(request, ModelCallRequested):
        reply = ScriptedModel().reply(ModelRequest.from_event(request))
        return ModelCallCompleted(
            envelope=_reply_envelope(request, "model", at),
            call_id=request.call_id,
            content=reply.content,
            tool_calls=reply.tool_calls,
            usage=reply.usage,
            provider=request.provider,
            model=request.model,
        )
    if isinstance(request, ToolCallRequested):
        tool = support_agent.tool(request.tool)
        assert tool is not None and tool.func is not None
        tools_called.append(request.tool)
        return ToolCallCompleted(
            envelope=_reply_envelope(request, "tool", at),
            call_id=request.call_id,
            tool=request.tool,
            result_json=canonical_json(tool.func(**json.loads(request.arguments_json))),
        )
    if isinstance(request, ApprovalRequested):
        assert request.tool == "issue_refund"
        return decide(request, approve=True, approver="alice", now=T0 + timedelta(milliseconds=at))
    return None


def test_the_script_drives_the_demo_support_agent_to_its_answer() -> None:
    state: AgentState | None = None
    queue: list[Event] = [agent_input("cust-1", DEMO_TEXT)]
    tools_called: list[str] = []
    outcome: RunCompleted | None = None
    for at in range(1, 50):
        if not queue:
            break
        decision = transition(state, queue.pop(0), support_agent)
        assert not isinstance(decision, Rejected), decision
        state = decision.state
        for emitted in decision.emits:
            if isinstance(emitted, RunCompleted):
                outcome = emitted
            reply = _world(emitted, at, tools_called)
            if reply is not None:
                queue.append(reply)
    assert tools_called == ["lookup_order", "issue_refund", "search_faq"]
    assert outcome is not None and outcome.steps == 4
    assert "o-1001" in outcome.output and "refunded_cents" in outcome.output
    assert "returned within 30 days" in outcome.output


def _team_world(request: Event, at: int, tools_called: list[str]) -> Event | None:
    """The support world, with the tools of every kind of the team."""
    if isinstance(request, ToolCallRequested):
        tools = {t.name: t for spec in team.specs for t in spec.tools}
        tool = tools[request.tool]
        assert tool.func is not None
        tools_called.append(f"{request.agent_id}:{request.tool}")
        return ToolCallCompleted(
            envelope=_reply_envelope(request, "tool", at),
            call_id=request.call_id,
            tool=request.tool,
            result_json=canonical_json(tool.func(**json.loads(request.arguments_json))),
        )
    return _world(request, at, tools_called)


def _drive_team(first: AgentInput) -> tuple[list[Event], list[str]]:
    """Every event of the conversation that ``first`` starts (and the tools called), each agent
    of the team on its own state, as the processor keys them."""
    states: dict[str, AgentState] = {}
    queue: list[Event] = [first]
    emitted_all: list[Event] = []
    tools_called: list[str] = []
    for at in range(1, 80):
        if not queue:
            break
        event = queue.pop(0)
        decision = transition(states.get(event.agent_id), event, team)
        assert not isinstance(decision, Rejected), decision
        states[event.agent_id] = decision.state
        for emitted in decision.emits:
            emitted_all.append(emitted)
            if isinstance(emitted, AgentInput | DelegationReturned):
                queue.append(emitted)  # for another agent: through the bus
            reply = _team_world(emitted, at, tools_called)
            if reply is not None:
                emitted_all.append(reply)
                queue.append(reply)
    assert not queue
    return emitted_all, tools_called


def test_the_team_scripts_delegate_in_parallel_and_answer_with_both() -> None:
    question = "Where is my order o-1001, and can I still return it?"
    first = AgentInput(envelope=agent_input("ana").envelope, text=question, kind="triage")
    events, tools_called = _drive_team(first)
    asking = next(e for e in events if isinstance(e, ModelCallCompleted) and e.agent_id == "ana")
    assert [c.tool for c in asking.tool_calls] == ["ask_orders", "ask_policy"]
    assert sorted(tools_called) == ["ana/orders:lookup_order", "ana/policy:search_faq"]
    outcomes = {e.agent_id: e for e in events if isinstance(e, RunCompleted)}
    assert set(outcomes) == {"ana", "ana/orders", "ana/policy"}
    assert outcomes["ana/orders"].output == "Order o-1001 is shipped, carrier DHL"
    answer = outcomes["ana"].output
    assert "ask_orders: Order o-1001 is shipped" in answer
    assert "returned within 30 days with the receipt." in answer and ".." not in answer


def test_the_team_scripts_hand_a_refund_over_and_the_refund_is_approved_there() -> None:
    question = "Order o-1003 arrived broken, please refund it."
    first = AgentInput(envelope=agent_input("ben").envelope, text=question)
    events, tools_called = _drive_team(first)
    [handed] = [e for e in events if isinstance(e, RunHandedOff)]
    assert (handed.agent_id, handed.to_agent_id, handed.note) == ("ben", "ben/refunds", question)
    assert tools_called == ["ben/refunds:lookup_order", "ben/refunds:issue_refund"]
    [approval] = [e for e in events if isinstance(e, ApprovalRequested)]
    assert approval.agent_id == "ben/refunds"
    [done] = [e for e in events if isinstance(e, RunCompleted)]
    assert (done.agent_id, done.output) == ("ben/refunds", "Refunded 9900 cents for order o-1003.")
