"""The agent of the steering tests: it sleeps, waits for a shipment's callback, or asks for a
refund (which nobody decides, so the run stays in flight), as its input says."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from world import lookup_order, refund

from agentstream.processors.core.ids import derived_id
from agentstream.processors.core.spec import AgentSpec, Budgets, sleep, tool
from agentstream.processors.testing import ModelReply, ScriptedWorld
from agentstream.processors.workers.results import result_envelope
from agentstream.schemas.events import (
    ApprovalRequested,
    Event,
    ModelCallRequested,
    ToolCallIntent,
    ToolCallRequested,
    ToolCallWaiting,
)

__all__ = ["SLEEP_S", "callback_of", "respond", "steerable"]

#: the sleep the model asks for: two hours
SLEEP_S = 7200


@tool
def ship(order_id: str) -> dict[str, str]:
    """Ship an order; the carrier calls back when it is picked up."""
    return {"order_id": order_id}


def steerable() -> AgentSpec:
    return AgentSpec(
        name="steerable",
        system_prompt="Do what is asked.",
        tools=(lookup_order, refund, ship, sleep),
        budgets=Budgets(run_deadline_s=4 * 3600),
    )


def _model(request: ModelCallRequested) -> ModelReply:
    messages = json.loads(request.messages_json)
    if request.step > 1:
        results = [m["content"] for m in messages if m["role"] == "tool"]
        return f"done: {results}", []
    text = messages[-1]["content"]
    for word, name, arguments in (
        ("sleep", "sleep", {"seconds": SLEEP_S}),
        ("ship", "ship", {"order_id": "o-1"}),
        ("refund", "refund", {"order_id": "o-1", "amount_cents": 500}),
        ("look", "lookup_order", {"order_id": "o-1"}),
    ):
        if word in text:
            return None, [
                ToolCallIntent(tool_call_id="tc-1", tool=name, arguments_json=json.dumps(arguments))
            ]
    return "nothing to do", []


_WORLD = ScriptedWorld(
    namespace=uuid.UUID("6a3e0c43-5f0e-4b8e-9d55-0f7c3b1f8a21"),
    model=_model,
    tool=lambda request: json.dumps({"ok": True}),
    approver=None,
)


def callback_of(call_id: str) -> str:
    return derived_id(call_id, "callback")


def respond(request: Event) -> Event | None:
    """The world, answering at the real time (a sleep moves the agent's clock ahead of it),
    with the carrier's tool waiting for a callback and nobody deciding approvals."""
    if isinstance(request, ApprovalRequested):
        return None
    if isinstance(request, ToolCallRequested) and request.tool == "ship":
        now = datetime.now(UTC)
        return ToolCallWaiting(
            envelope=result_envelope(
                request, call_id=request.call_id, purpose="wait", source="tool-worker", now=now
            ),
            call_id=request.call_id,
            tool=request.tool,
            callback_id=callback_of(request.call_id),
            expires_at=now + timedelta(hours=1),
        )
    reply = _WORLD(request)
    if reply is None:
        return None
    envelope = reply.envelope.model_copy(update={"occurred_at": datetime.now(UTC)})
    return reply.model_copy(update={"envelope": envelope})
