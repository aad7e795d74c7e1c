"""The scripted model: deterministic rules, and the demo support agent driven to its answer."""

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
from agentstream.processors.examples import support_agent
from agentstream.processors.workers.model_adapters import ModelRequest
from agentstream.processors.workers.model_scripted import ScriptedModel
from agentstream.schemas.events import (
    ApprovalRequested,
    Envelope,
    Event,
    ModelCallCompleted,
    ModelCallRequested,
    RunCompleted,
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
