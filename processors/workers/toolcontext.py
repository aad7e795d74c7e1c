"""What a running tool can ask about its call, without it being part of the tool's signature
(which the model sees), and how it says that the call ends elsewhere.

The idempotency key is the call id, which stays the same on every retry and every re-delivery
of the request, so a tool with side effects can dedupe.

A tool that hands work to another system (a person, a batch job, a webhook) does not block a
worker until it is done. It passes its :func:`callback_id` to that system and returns
:class:`AwaitCallback`; the worker answers the call with ``ToolCallWaiting`` instead of a result,
and the call ends when the other system sends ``CallbackCompleted`` with that id (HTTP ingress,
``agentstream callbacks complete``, or the steering SDK), or fails once ``timeout_s`` passed::

    from agentstream.processors.core.spec import tool
    from agentstream.processors.workers.toolcontext import AwaitCallback, callback_id

    @tool
    def request_review(document: str) -> AwaitCallback:
        reviews.submit(document, reply_to=callback_id())  # the same id on every retry
        return AwaitCallback(timeout_s=2 * 86_400, detail="sent to the review queue")

The callback id is derived from the call id, so a retried or re-delivered call hands the other
system the same id, and its ``ToolCallWaiting`` is the same event.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from dataclasses import dataclass

from agentstream.processors.core.ids import derived_id
from agentstream.processors.errors import WorkerError
from agentstream.schemas.errors import AgentStreamError

__all__ = [
    "CALLBACK_PURPOSE",
    "MAX_CALLBACK_TIMEOUT_S",
    "AwaitCallback",
    "CallContext",
    "callback_id",
    "callback_id_of",
    "current_call",
    "enter_call",
    "exit_call",
    "idempotency_key",
]

CALLBACK_PURPOSE = "callback"
#: A year: longer waits belong in a workflow of their own (a run's deadline ends it sooner anyway).
MAX_CALLBACK_TIMEOUT_S = 366 * 86_400.0


def callback_id_of(call_id: str) -> str:
    """The callback id of the tool call ``call_id`` (what ``CallbackCompleted`` must name)."""
    return derived_id(call_id, CALLBACK_PURPOSE)


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

    @property
    def callback_id(self) -> str:
        return callback_id_of(self.call_id)


@dataclass(frozen=True)
class AwaitCallback:
    """Returned by a tool: the call waits up to ``timeout_s`` seconds for another system to
    complete the call's :func:`callback_id`. ``detail`` (what was started, where) goes to the
    worker's log."""

    timeout_s: float
    detail: str = ""

    def __post_init__(self) -> None:
        if not math.isfinite(self.timeout_s) or not 0 < self.timeout_s <= MAX_CALLBACK_TIMEOUT_S:
            raise WorkerError(
                f"AwaitCallback needs 0 < timeout_s <= {MAX_CALLBACK_TIMEOUT_S:.0f}, "
                f"got {self.timeout_s!r}"
            )


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


def callback_id() -> str:
    """The id another system completes to end this call, when the tool returns
    :class:`AwaitCallback`."""
    return current_call().callback_id


def enter_call(context: CallContext) -> object:
    """Set the context for the current task; returns the token for ``exit_call``."""
    return _current.set(context)


def exit_call(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
