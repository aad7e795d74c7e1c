"""The OpenAI-compatible adapter against a real HTTP server on loopback that speaks the
protocol (no patched client), alone and behind the model executor's breaker and fallback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from builders import envelope
from openai_stub import OpenAIStub, completion, error

from agentstream.processors.core.spec import RetryPolicy
from agentstream.processors.errors import ProviderError
from agentstream.processors.workers.breaker import BreakerPolicy, BreakerRegistry
from agentstream.processors.workers.model_adapters import ModelRequest
from agentstream.processors.workers.model_executor import ModelExecutor
from agentstream.processors.workers.model_openai import OpenAICompatibleModel
from agentstream.processors.workers.model_scripted import ScriptedModel
from agentstream.schemas.events import ModelCallCompleted, ModelCallFailed, ModelCallRequested

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Look an order up.",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    }
]
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "where is o-1001?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "t1",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": "{}"},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "t1", "name": "lookup_order", "content": '{"found": false}'},
]


def model_request(**parameters: Any) -> ModelRequest:
    return ModelRequest(
        call_id="call-42",
        model="gpt-test",
        system_prompt="Be brief.",
        messages=MESSAGES,
        tools=TOOLS,
        parameters=parameters,
    )


def call_event(fallback: bool) -> ModelCallRequested:
    return ModelCallRequested(
        envelope=envelope(run_id="run-1"),
        call_id="call-7",
        step=1,
        provider="openai",
        model="gpt-test",
        messages_json=json.dumps([{"role": "user", "content": "where is o-1001?"}]),
        tools_json=json.dumps(TOOLS),
        fallback_provider="scripted" if fallback else None,
        fallback_model="support-script" if fallback else None,
    )


async def complete(base_url: str, request: ModelRequest) -> Any:
    model = OpenAICompatibleModel(base_url, "sk-test", timeout_s=5)
    try:
        return await model.complete(request)
    finally:
        await model.aclose()


def test_a_tool_calling_round_trip_over_http() -> None:
    call = {
        "id": "call_abc",
        "type": "function",
        "function": {"name": "lookup_order", "arguments": '{"order_id": "o-1001"}'},
    }
    with OpenAIStub() as server:
        server.reply(200, completion(None, [call], prompt_tokens=120, completion_tokens=9))
        response = asyncio.run(complete(server.base_url, model_request(temperature=0.2)))
        [received] = server.state.received
    [intent] = response.tool_calls
    assert (intent.tool_call_id, intent.tool) == ("call_abc", "lookup_order")
    assert json.loads(intent.arguments_json) == {"order_id": "o-1001"}
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (120, 9)
    body = received.body
    assert body["model"] == "gpt-test" and body["temperature"] == 0.2
    assert body["tools"] == TOOLS
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1:3] == MESSAGES[:2]
    assert "name" not in body["messages"][3], "tool messages carry no name in the protocol"
    assert received.headers["authorization"] == "Bearer sk-test"
    assert received.headers["idempotency-key"] == "call-42"


def test_a_final_answer_over_http() -> None:
    with OpenAIStub() as server:
        server.reply(200, completion("It has not shipped yet."))
        response = asyncio.run(complete(server.base_url, model_request()))
    assert response.content == "It has not shipped yet." and response.tool_calls == []


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (429, True), (400, False)])
def test_http_errors_are_provider_errors(status: int, retryable: bool) -> None:
    with OpenAIStub() as server:
        server.reply(*error(status, "nope"))
        with pytest.raises(ProviderError) as raised:
            asyncio.run(complete(server.base_url, model_request()))
    assert raised.value.retryable is retryable and raised.value.status == status
    assert "nope" in str(raised.value)


def test_an_unreachable_server_is_a_retryable_provider_error() -> None:
    with OpenAIStub() as server:
        url = server.base_url
    with pytest.raises(ProviderError) as raised:
        asyncio.run(complete(url, model_request()))
    assert raised.value.retryable


def executor(base_url: str) -> ModelExecutor:
    return ModelExecutor(
        {"openai": OpenAICompatibleModel(base_url, timeout_s=5), "scripted": ScriptedModel()},
        BreakerRegistry("model", BreakerPolicy(failure_threshold=2, cooldown_s=60)),
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02),
    )


def test_retries_get_past_a_passing_overload() -> None:
    with OpenAIStub() as server:
        server.reply(*error(503, "overloaded"))
        server.reply(200, completion("fine now", prompt_tokens=5, completion_tokens=2))
        result = asyncio.run(executor(server.base_url).execute(call_event(fallback=False)))
    assert isinstance(result, ModelCallCompleted)
    assert (result.attempts, result.content, result.fallback_used) == (2, "fine now", False)
    assert result.usage.total == 7


def test_a_down_provider_is_a_failed_result_or_the_fallback_answers() -> None:
    with OpenAIStub() as server:
        server.state.default = error(500, "down")

        async def scenario() -> tuple[Any, Any]:
            ex = executor(server.base_url)
            try:
                return await ex.execute(call_event(False)), await ex.execute(call_event(True))
            finally:
                await ex.aclose()

        failed, degraded = asyncio.run(scenario())
        calls = len(server.state.received)
    assert isinstance(failed, ModelCallFailed)
    assert (failed.provider, failed.error_class) == ("openai", "CircuitOpenError")
    assert failed.attempts == 2, "the breaker opened after two failures and stopped the third"
    assert isinstance(degraded, ModelCallCompleted)
    assert degraded.fallback_used and degraded.provider == "scripted"
    assert calls == 2, "with the breaker open the primary is not called at all"
