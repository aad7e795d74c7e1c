"""Small builders of valid events for tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from agentstream.schemas.events import (
    AgentInput,
    AgentPaused,
    AgentResumed,
    Envelope,
    MemoryErased,
    MemoryRecorded,
    RunCancelRequested,
)

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


def input_at(at: datetime, text: str = "hello", agent_id: str = "agent-1") -> AgentInput:
    """An input that occurred at ``at``."""
    return AgentInput(envelope=envelope(agent_id, occurred_at=at), text=text)


def paused(at: datetime = T0, agent_id: str = "agent-1") -> AgentPaused:
    return AgentPaused(envelope=envelope(agent_id, occurred_at=at), requested_by="ops")


def resumed(at: datetime = T0, agent_id: str = "agent-1") -> AgentResumed:
    return AgentResumed(envelope=envelope(agent_id, occurred_at=at), requested_by="ops")


def cancel(
    run_id: str | None = None, at: datetime = T0, agent_id: str = "agent-1"
) -> RunCancelRequested:
    """A request to cancel ``run_id`` (None: whichever run is running)."""
    return RunCancelRequested(
        envelope=envelope(agent_id, run_id=run_id, occurred_at=at),
        requested_by="ops",
        reason="asked twice",
    )


def recorded(key: str, value: str, at: datetime = T0, agent_id: str = "agent-1") -> MemoryRecorded:
    """A fact an operator records for the agent."""
    return MemoryRecorded(
        envelope=envelope(agent_id, occurred_at=at), key=key, value=value, recorded_by="ops"
    )


def erased(key: str | None, at: datetime = T0, agent_id: str = "agent-1") -> MemoryErased:
    """An erasure of the fact ``key`` (None: every fact and the whole conversation)."""
    return MemoryErased(
        envelope=envelope(agent_id, occurred_at=at), key=key, requested_by="privacy"
    )
