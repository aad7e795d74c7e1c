"""The tests' scripted world: the support agent, its model, tools and approver.

``respond`` turns a request the processor emitted into the result event a worker (or an
approver) would send back. Everything is derived from the request, so it is deterministic.
"""

from __future__ import annotations

import dataclasses
import json
import uuid

from agentstream.processors.core.spec import AgentSpec, Budgets, ToolSpec, tool
from agentstream.processors.testing import ModelReply, ScriptedWorld
from agentstream.schemas.events import (
    ApprovalGranted,
    ApprovalRequested,
    ModelCallCompleted,
    ModelCallRequested,
    ToolCallCompleted,
    ToolCallIntent,
    ToolCallRequested,
)


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


def _model(request: ModelCallRequested) -> ModelReply:
    """Step 1 looks the order up; a user text with 'refund' also refunds (gated); then answers."""
    messages = json.loads(request.messages_json)
    user_text = messages[0]["content"] or ""
    tool_results = [m for m in messages if m["role"] == "tool"]
    if request.step != 1:
        return f"done after {len(tool_results)} tool result(s): {user_text}", []
    calls = [
        ToolCallIntent(
            tool_call_id="tc-1",
            tool="lookup_order",
            arguments_json=json.dumps({"order_id": "o-1"}),
        )
    ]
    if "refund" in user_text:
        calls.append(
            ToolCallIntent(
                tool_call_id="tc-2",
                tool="refund",
                arguments_json=json.dumps({"order_id": "o-1", "amount_cents": 500}),
            )
        )
    return None, calls


WORLD = ScriptedWorld(
    namespace=uuid.UUID("3d1c61c4-0a1e-4a7e-8b7e-6a0f9a3f2b10"),
    model=_model,
    tool=lambda request: json.dumps({"ok": True, "call": request.call_id}),
)

#: What the world sends back for a request (None for outcomes, which end a run).
respond = WORLD
#: The envelope of a reply to a request, as the world would make it.
result_envelope = WORLD.envelope


def model_answer(request: ModelCallRequested) -> ModelCallCompleted:
    reply = WORLD(request)
    assert isinstance(reply, ModelCallCompleted)
    return reply


def tool_result(request: ToolCallRequested) -> ToolCallCompleted:
    reply = WORLD(request)
    assert isinstance(reply, ToolCallCompleted)
    return reply


def approve(request: ApprovalRequested, approver: str = "alice") -> ApprovalGranted:
    reply = dataclasses.replace(WORLD, approver=approver)(request)
    assert isinstance(reply, ApprovalGranted)
    return reply
