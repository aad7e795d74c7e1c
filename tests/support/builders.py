"""Small builders of valid events for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from agentstream.schemas.events import AgentInput, Envelope

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def envelope(
    agent_id: str = "agent-1", *, event_id: str | None = None, **extra: object
) -> Envelope:
    event_id = event_id or str(uuid.uuid4())
    fields: dict[str, object] = {
        "event_id": event_id,
        "agent_id": agent_id,
        "tenant_id": "tenant-1",
        "correlation_id": event_id,
        "occurred_at": T0,
        "source": "test",
        **extra,
    }
    return Envelope.model_validate(fields)


def agent_input(agent_id: str = "agent-1", text: str = "hello") -> AgentInput:
    return AgentInput(envelope=envelope(agent_id), text=text)
