"""What a running tool can ask about its call, without it being part of the tool's signature
(which the model sees): above all the idempotency key, the call id, which stays the same on
every retry and every re-delivery of the request, so a tool with side effects can dedupe."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from agentstream.schemas.errors import AgentStreamError

__all__ = [
    "CallContext",
    "current_call",
    "enter_call",
    "exit_call",
    "idempotency_key",
]


@dataclass(frozen=True)
class CallContext:
    call_id: str
    attempt: int
    agent_id: str
    tenant_id: str
    run_id: str | None
    tool: str

    @property
    def idempotency_key(self) -> str:
        return self.call_id


_current: ContextVar[CallContext | None] = ContextVar("agentstream_tool_call", default=None)


def current_call() -> CallContext:
    """The call being executed; only valid inside a tool run by a worker."""
    context = _current.get()
    if context is None:
        raise AgentStreamError("not inside a tool call run by an agentstream worker")
    return context


def idempotency_key() -> str:
    """The key a tool passes to whatever it changes, so a retried call changes it once."""
    return current_call().idempotency_key


def enter_call(context: CallContext) -> object:
    """Set the context for the current task; returns the token for ``exit_call``."""
    return _current.set(context)


def exit_call(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
