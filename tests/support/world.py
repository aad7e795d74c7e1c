"""A scripted fake of the workers and people around the state machine, for tests.

``respond`` turns a request the processor emitted into the result event a worker (or an
approver) would send back. Everything is derived from the request, so it is deterministic.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from agentstream.processors.core.spec import AgentSpec, Budgets, ToolSpec, tool
from agentstream.schemas.events import (
    ApprovalGranted,
    ApprovalRequested,
    Envelope,
    Event,
    ModelCallCompleted,
    ModelCallRequested,
    TokenUsage,
    ToolCallCompleted,
    ToolCallIntent,
    ToolCallRequested,
)

_NS = uuid.UUID("3d1c61c4-0a1e-4a7e-8b7e-6a0f9a3f2b10")


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order by id."""
    return {"order_id": order_id, "status": "shipped"}


@tool(requires_approval=True)
def refund(order_id: str, amount_cents: int) -> dict[str, str]:
    """Refund part of an order."""
    return {"order_id": order_id, "refunded": str(amount_cents)}


def support_spec(**budgets: object) -> AgentSpec:
    tools: tuple[ToolSpec, ...] = (lookup_order, refund)
    return AgentSpec(
        name="support",
        system_prompt="Be helpful.",
        tools=tools,
        budgets=Budgets.model_validate(budgets),
    )


def result_envelope(
    request: Event, purpose: str, delay_ms: int = 5, source: str = "worker"
) -> Envelope:
    cause = request.envelope
    return Envelope(
        event_id=str(uuid.uuid5(_NS, f"{cause.event_id}/{purpose}")),
        agent_id=cause.agent_id,
        tenant_id=cause.tenant_id,
        run_id=cause.run_id,
        correlation_id=cause.correlation_id,
        causation_id=cause.event_id,
        occurred_at=cause.occurred_at + timedelta(milliseconds=delay_ms),
        source=source,
    )


def model_answer(request: ModelCallRequested) -> ModelCallCompleted:
    """Step 1 looks the order up; a user text with 'refund' also refunds (gated); then answers."""
    messages = json.loads(request.messages_json)
    user_text = messages[0]["content"] or ""
    tool_results = [m for m in messages if m["role"] == "tool"]
    calls: list[ToolCallIntent] = []
    content = None
    if request.step == 1:
        calls.append(
            ToolCallIntent(
                tool_call_id="tc-1",
                tool="lookup_order",
                arguments_json=json.dumps({"order_id": "o-1"}),
            )
        )
        if "refund" in user_text:
            calls.append(
                ToolCallIntent(
                    tool_call_id="tc-2",
                    tool="refund",
                    arguments_json=json.dumps({"order_id": "o-1", "amount_cents": 500}),
                )
            )
    else:
        content = f"done after {len(tool_results)} tool result(s): {user_text}"
    return ModelCallCompleted(
        envelope=result_envelope(request, "model"),
        call_id=request.call_id,
        content=content,
        tool_calls=calls,
        usage=TokenUsage(prompt_tokens=10, completion_tokens=5),
        provider=request.provider,
        model=request.model,
    )


def tool_result(request: ToolCallRequested) -> ToolCallCompleted:
    return ToolCallCompleted(
        envelope=result_envelope(request, "tool"),
        call_id=request.call_id,
        tool=request.tool,
        result_json=json.dumps({"ok": True, "call": request.call_id}),
    )


def approve(request: ApprovalRequested, approver: str = "alice") -> ApprovalGranted:
    return ApprovalGranted(
        envelope=result_envelope(request, "approval", source="cli"),
        call_id=request.call_id,
        arguments_hash=request.arguments_hash,
        approver=approver,
    )


def respond(request: Event) -> Event | None:
    """What the world sends back for a request (None for outcomes, which end a run)."""
    if isinstance(request, ModelCallRequested):
        return model_answer(request)
    if isinstance(request, ToolCallRequested):
        return tool_result(request)
    if isinstance(request, ApprovalRequested):
        return approve(request)
    return None
