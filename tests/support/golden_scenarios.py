"""The scenarios recorded as golden histories (see golden.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from builders import T0, envelope
from world import respond, result_envelope, support_spec

from agentstream.processors.core.spec import AgentSpec
from agentstream.schemas.events import (
    AgentInput,
    ApprovalDenied,
    ApprovalRequested,
    Event,
    ToolCallFailed,
    ToolCallRequested,
)

Scenario = tuple[AgentSpec, list[Event], Callable[[Event], Event | None]]


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
}
