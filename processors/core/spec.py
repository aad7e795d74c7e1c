"""How an agent is defined: its model, prompt, tools and budgets.

Tools are typed Python functions; the JSON schema the model sees is derived from the signature,
so the declaration and the implementation cannot drift apart::

    @tool(requires_approval=True, timeout_s=10)
    def refund(order_id: str, amount_cents: int) -> dict[str, str]:
        "Refund part of an order."
        ...
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, create_model

from agentstream.schemas.errors import ConfigurationError

__all__ = [
    "AgentSpec",
    "Budgets",
    "ModelSpec",
    "RetryPolicy",
    "ToolSpec",
    "tool",
]


class RetryPolicy(BaseModel):
    """How a worker retries a call: exponential backoff with full jitter."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=20)
    initial_backoff_s: float = Field(default=0.2, ge=0)
    max_backoff_s: float = Field(default=10.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)


class ModelSpec(BaseModel):
    """Which model answers, and with what parameters."""

    model_config = ConfigDict(frozen=True)

    provider: str = "scripted"
    name: str = "default"
    parameters: dict[str, Any] = Field(default_factory=dict)
    fallback_provider: str | None = None
    fallback_name: str | None = None


class Budgets(BaseModel):
    """Limits that end a run as failed instead of letting it loop forever."""

    model_config = ConfigDict(frozen=True)

    max_steps: int = Field(default=10, ge=1, description="model calls per run")
    max_tool_calls: int = Field(default=20, ge=0, description="tool calls per run")
    max_tokens: int = Field(default=200_000, ge=1, description="prompt + completion tokens per run")
    run_deadline_s: float = Field(default=3600.0, gt=0, description="wall time per run")
    approval_timeout_s: float = Field(default=86_400.0, gt=0, description="time to decide")


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call. ``func`` is only needed where the tool runs (the worker)."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    requires_approval: bool = False
    timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_failure: Literal["fail_run", "report_to_model"] = "fail_run"
    func: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def definition(self) -> dict[str, Any]:
        """The OpenAI-style function definition the model sees."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


def _parameters_schema(func: Callable[..., Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigurationError(f"tool {func.__name__}: *args/**kwargs cannot be described")
        if param.annotation is inspect.Parameter.empty:
            raise ConfigurationError(f"tool {func.__name__}: parameter {name!r} needs a type")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (param.annotation, default)
    model = create_model(f"{func.__name__}_arguments", **fields)
    schema: dict[str, Any] = model.model_json_schema()
    schema.pop("title", None)
    schema["additionalProperties"] = False
    return schema


@overload
def tool(func: Callable[..., Any], /) -> ToolSpec: ...


@overload
def tool(
    *,
    name: str | None = None,
    requires_approval: bool = False,
    timeout_s: float = 30.0,
    retry: RetryPolicy | None = None,
    on_failure: Literal["fail_run", "report_to_model"] = "fail_run",
) -> Callable[[Callable[..., Any]], ToolSpec]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    requires_approval: bool = False,
    timeout_s: float = 30.0,
    retry: RetryPolicy | None = None,
    on_failure: Literal["fail_run", "report_to_model"] = "fail_run",
) -> ToolSpec | Callable[[Callable[..., Any]], ToolSpec]:
    """Declare a typed function as a tool (bare ``@tool`` or ``@tool(...)``)."""

    def declare(f: Callable[..., Any]) -> ToolSpec:
        return ToolSpec(
            name=name or f.__name__,
            description=inspect.getdoc(f) or f.__name__,
            parameters=_parameters_schema(f),
            requires_approval=requires_approval,
            timeout_s=timeout_s,
            retry=retry or RetryPolicy(),
            on_failure=on_failure,
            func=f,
        )

    return declare(func) if func is not None else declare


@dataclass(frozen=True)
class AgentSpec:
    """Everything the state machine needs to know about an agent."""

    name: str
    system_prompt: str = ""
    model: ModelSpec = field(default_factory=ModelSpec)
    tools: tuple[ToolSpec, ...] = ()
    budgets: Budgets = field(default_factory=Budgets)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ConfigurationError(
                f"agent {self.name}: duplicate tool names {sorted(duplicates)}"
            )

    def tool(self, name: str) -> ToolSpec | None:
        for spec in self.tools:
            if spec.name == name:
                return spec
        return None

    def tool_definitions(self) -> list[dict[str, Any]]:
        return [t.definition() for t in self.tools]

    # Every model call carries these; computed once per spec, not once per call.
    @cached_property
    def tools_json(self) -> str:
        return json.dumps(self.tool_definitions(), sort_keys=True)

    @cached_property
    def parameters_json(self) -> str:
        return json.dumps(self.model.parameters, sort_keys=True)
