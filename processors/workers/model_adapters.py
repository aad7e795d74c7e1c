"""What a model provider adapter is: a chat completion with tools, in the OpenAI shape that the
state machine already speaks (its messages are OpenAI chat messages)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from agentstream.processors.errors import ProviderError
from agentstream.schemas.events import ModelCallRequested, TokenUsage, ToolCallIntent

__all__ = [
    "ModelAdapter",
    "ModelRequest",
    "ModelResponse",
]


@dataclass(frozen=True)
class ModelRequest:
    call_id: str
    model: str
    system_prompt: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_event(cls, event: ModelCallRequested) -> ModelRequest:
        try:
            messages = json.loads(event.messages_json)
            tools = json.loads(event.tools_json)
            parameters = json.loads(event.parameters_json)
        except ValueError as exc:
            raise ProviderError(f"the request is not valid JSON: {exc}", retryable=False) from exc
        if not isinstance(messages, list) or not isinstance(tools, list):
            raise ProviderError("messages and tools must be JSON lists", retryable=False)
        if not isinstance(parameters, dict):
            raise ProviderError("parameters must be a JSON object", retryable=False)
        return cls(
            call_id=event.call_id,
            model=event.model,
            system_prompt=event.system_prompt,
            messages=messages,
            tools=tools,
            parameters=parameters,
        )


@dataclass(frozen=True)
class ModelResponse:
    content: str | None
    tool_calls: list[ToolCallIntent] = field(default_factory=list)
    usage: TokenUsage = field(default_factory=TokenUsage)


class ModelAdapter(Protocol):
    """One provider. ``complete`` raises ProviderError (retryable or not) for any failure."""

    async def complete(self, request: ModelRequest) -> ModelResponse: ...

    async def aclose(self) -> None: ...
