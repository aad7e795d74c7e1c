"""Testing helpers for agents, public like ``temporalio.testing``: a scripted world that answers
the state machine's requests as workers and approvers would, and ``drive``, which folds inputs
through the state machine with that world until nothing is pending.

No broker, no workers, no clock: everything is derived from the requests, so a history driven
twice is the same event for event. The tests' own scenarios and the bench's workload are both
written with it."""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from agentstream.processors.core.machine import transition
from agentstream.processors.core.spec import AgentSpec, SpecVersions
from agentstream.processors.core.state import AgentState
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

__all__ = ["ModelReply", "ScriptedWorld", "drive"]

#: What a scripted model answers a request with: its text (None while it calls tools) and the
#: tool calls it asks for.
ModelReply = tuple[str | None, list[ToolCallIntent]]


@dataclass(frozen=True)
class ScriptedWorld:
    """The model, the tools and the approvers, scripted. Each reply's event id derives from the
    request's in ``namespace``, and its time is the request's plus ``delay_ms``."""

    namespace: uuid.UUID
    model: Callable[[ModelCallRequested], ModelReply]
    tool: Callable[[ToolCallRequested], str]
    source: str = "worker"
    delay_ms: int = 5
    usage: TokenUsage = field(
        default_factory=lambda: TokenUsage(prompt_tokens=10, completion_tokens=5)
    )
    model_latency_ms: int = 0
    tool_latency_ms: int = 0
    #: who grants every approval request (None: nobody does, runs wait for a person)
    approver: str | None = "alice"
    approver_source: str = "cli"

    def envelope(
        self, request: Event, purpose: str, delay_ms: int | None = None, source: str | None = None
    ) -> Envelope:
        """The envelope of the reply to ``request``: same agent, run and correlation, caused by
        it."""
        cause = request.envelope
        return cause.caused(
            event_id=str(uuid.uuid5(self.namespace, f"{cause.event_id}/{purpose}")),
            occurred_at=cause.occurred_at
            + timedelta(milliseconds=self.delay_ms if delay_ms is None else delay_ms),
            source=source or self.source,
        )

    def __call__(self, request: Event) -> Event | None:
        """The reply to a request (None for what needs none, such as outcomes)."""
        if isinstance(request, ModelCallRequested):
            content, calls = self.model(request)
            return ModelCallCompleted(
                envelope=self.envelope(request, "model"),
                call_id=request.call_id,
                content=content,
                tool_calls=calls,
                usage=self.usage,
                provider=request.provider,
                model=request.model,
                latency_ms=self.model_latency_ms,
            )
        if isinstance(request, ToolCallRequested):
            return ToolCallCompleted(
                envelope=self.envelope(request, "tool"),
                call_id=request.call_id,
                tool=request.tool,
                result_json=self.tool(request),
                latency_ms=self.tool_latency_ms,
            )
        if isinstance(request, ApprovalRequested) and self.approver is not None:
            return ApprovalGranted(
                envelope=self.envelope(request, "approval", source=self.approver_source),
                call_id=request.call_id,
                arguments_hash=request.arguments_hash,
                approver=self.approver,
            )
        return None


def drive(
    inputs: Iterable[Event],
    spec: AgentSpec | SpecVersions,
    world: Callable[[Event], Event | None],
    state: AgentState | None = None,
) -> tuple[list[Event], AgentState | None]:
    """Every event of one agent's history in the order the processor would see and emit them,
    from ``state`` on (a new agent by default): each input, then what it emits, then the world's
    replies in turn, until nothing is pending."""
    pending: deque[Event] = deque(inputs)
    history: list[Event] = []
    while pending:
        event = pending.popleft()
        history.append(event)
        decision = transition(state, event, spec)
        state = decision.state
        for emitted in decision.emits:
            history.append(emitted)
            reply = world(emitted)
            if reply is not None:
                pending.append(reply)
    return history, state
