"""The state of one agent: what the state machine folds events into.

Plain immutable values that serialize to JSON for the snapshot (``AgentStateSnapshot``), so a
processor can restore an agent from the compacted changelog and carry on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from agentstream.schemas.events import TokenUsage

__all__ = [
    "DEDUPE_WINDOW",
    "STATE_FORMAT",
    "AgentState",
    "ChatMessage",
    "PendingTool",
    "QueuedInput",
    "RunState",
    "evolve",
]

#: How many applied event ids an agent remembers to recognise a re-delivery.
DEDUPE_WINDOW = 512
STATE_FORMAT = 1

_Value = TypeVar("_Value", bound=BaseModel)


def evolve(value: _Value, **changes: Any) -> _Value:
    """``value.model_copy(update=changes)`` for the frozen values here and the events: the same
    copy (shallow, nothing validated), without pydantic's generic copy machinery (a run start's
    transition: 38.5 to 34.5 µs, measured). A unit test holds the two equal."""
    cls = type(value)
    copied = cls.__new__(cls)
    object.__setattr__(copied, "__dict__", {**value.__dict__, **changes})
    object.__setattr__(
        copied, "__pydantic_fields_set__", value.__pydantic_fields_set__ | changes.keys()
    )
    # The models forbid extra fields and have no private attributes.
    object.__setattr__(copied, "__pydantic_extra__", None)
    object.__setattr__(copied, "__pydantic_private__", None)
    return copied


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChatMessage(_Frozen):
    """One message of a run's conversation, in the OpenAI chat shape."""

    role: Literal["user", "assistant", "tool"]
    content: str | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = list(self.tool_calls)
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


class PendingTool(_Frozen):
    """A tool call of the current step that has no result yet."""

    call_id: str
    tool_call_id: str
    tool: str
    arguments_json: str
    arguments_hash: str
    status: Literal["awaiting_approval", "requested"]
    approval_expires_at: datetime | None = None


class QueuedInput(_Frozen):
    event_id: str
    text: str
    occurred_at: datetime


class RunState(_Frozen):
    run_id: str
    input_event_id: str
    correlation_id: str
    started_at: datetime
    deadline_at: datetime
    messages: tuple[ChatMessage, ...]
    steps: int = 0
    tool_calls: int = 0
    usage: TokenUsage = Field(default_factory=TokenUsage)
    pending_model_call: str | None = None
    pending_tools: tuple[PendingTool, ...] = ()
    tool_results: tuple[ChatMessage, ...] = ()
    finished_calls: tuple[str, ...] = ()

    def pending_tool(self, call_id: str) -> PendingTool | None:
        for pending in self.pending_tools:
            if pending.call_id == call_id:
                return pending
        return None


class AgentState(_Frozen):
    agent_id: str
    tenant_id: str
    version: int = 0
    run: RunState | None = None
    queue: tuple[QueuedInput, ...] = ()
    runs_completed: int = 0
    runs_failed: int = 0
    usage: TokenUsage = Field(default_factory=TokenUsage)
    recent_event_ids: tuple[str, ...] = ()
    last_event_id: str | None = None
    updated_at: datetime | None = None

    @property
    def status(self) -> Literal["idle", "running", "awaiting_approval"]:
        if self.run is None:
            return "idle"
        if any(p.status == "awaiting_approval" for p in self.run.pending_tools):
            return "awaiting_approval"
        return "running"

    def has_applied(self, event_id: str) -> bool:
        return event_id in self.recent_event_ids

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> AgentState:
        return cls.model_validate_json(data)

    @classmethod
    def new(cls, agent_id: str, tenant_id: str) -> AgentState:
        return cls(agent_id=agent_id, tenant_id=tenant_id)
