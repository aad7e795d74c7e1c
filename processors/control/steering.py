"""The steering SDK: commands to an agent from outside the runtime, as events for agent.control.

Cancel a run, pause and resume an agent, record or erase what it remembers, complete a callback
it waits for. Every entrance (CLI, HTTP ingress, console) builds these events here, on
:func:`~agentstream.streams.producer.new_envelope`, with the requester's identity; the processor
judges them when it reads them (a cancel of a run that ended, a callback nobody waits for: the
DLQ), so nothing here reads state. The Kafka key is the agent id, as for every event.
"""

from __future__ import annotations

import json

from agentstream.schemas.errors import AgentStreamError
from agentstream.schemas.events import (
    AgentPaused,
    AgentResumed,
    CallbackCompleted,
    MemoryErased,
    MemoryRecorded,
    RunCancelRequested,
)
from agentstream.schemas.limits import MAX_RESULT_BYTES, utf8_size
from agentstream.streams.producer import new_envelope

__all__ = [
    "SteeringError",
    "SteeringEvent",
    "callback_result",
    "cancel_run",
    "complete_callback",
    "erase_memory",
    "pause_agent",
    "record_memory",
    "resume_agent",
]

SteeringEvent = (
    RunCancelRequested
    | AgentPaused
    | AgentResumed
    | MemoryRecorded
    | MemoryErased
    | CallbackCompleted
)


class SteeringError(AgentStreamError):
    """A steering command is malformed (a callback result that is not JSON, or too large)."""


def cancel_run(
    agent_id: str,
    run_id: str,
    *,
    requested_by: str,
    reason: str = "",
    tenant_id: str = "default",
    source: str = "sdk",
) -> RunCancelRequested:
    envelope = new_envelope(agent_id, tenant_id=tenant_id, run_id=run_id, source=source)
    return RunCancelRequested(envelope=envelope, requested_by=requested_by, reason=reason)


def pause_agent(
    agent_id: str,
    *,
    requested_by: str,
    reason: str = "",
    tenant_id: str = "default",
    source: str = "sdk",
) -> AgentPaused:
    envelope = new_envelope(agent_id, tenant_id=tenant_id, source=source)
    return AgentPaused(envelope=envelope, requested_by=requested_by, reason=reason)


def resume_agent(
    agent_id: str, *, requested_by: str, tenant_id: str = "default", source: str = "sdk"
) -> AgentResumed:
    envelope = new_envelope(agent_id, tenant_id=tenant_id, source=source)
    return AgentResumed(envelope=envelope, requested_by=requested_by)


def record_memory(
    agent_id: str,
    key: str,
    value: str,
    *,
    recorded_by: str,
    tenant_id: str = "default",
    source: str = "sdk",
) -> MemoryRecorded:
    envelope = new_envelope(agent_id, tenant_id=tenant_id, source=source)
    return MemoryRecorded(envelope=envelope, key=key, value=value, recorded_by=recorded_by)


def erase_memory(
    agent_id: str,
    key: str | None,
    *,
    requested_by: str,
    reason: str = "",
    tenant_id: str = "default",
    source: str = "sdk",
) -> MemoryErased:
    """Erase the fact ``key``; ``None`` erases everything the agent remembers (callers make
    their users ask for that explicitly)."""
    envelope = new_envelope(agent_id, tenant_id=tenant_id, source=source)
    return MemoryErased(envelope=envelope, key=key, requested_by=requested_by, reason=reason)


def complete_callback(
    agent_id: str,
    callback_id: str,
    result_json: str,
    *,
    completed_by: str,
    tenant_id: str = "default",
    source: str = "sdk",
) -> CallbackCompleted:
    """The answer to the tool call waiting for ``callback_id``: ``result_json`` (see
    :func:`callback_result`) becomes the tool's result in the conversation."""
    envelope = new_envelope(agent_id, tenant_id=tenant_id, source=source)
    return CallbackCompleted(
        envelope=envelope,
        callback_id=callback_id,
        result_json=result_json,
        completed_by=completed_by,
    )


def callback_result(text: str) -> str:
    """``text`` checked to be one JSON value within the result limit, as it was given (the
    model reads it as written)."""
    try:
        json.loads(text, parse_constant=_not_json)
    except ValueError as exc:
        raise SteeringError(f"the result is not JSON: {exc}") from exc
    size = utf8_size(text)
    if size > MAX_RESULT_BYTES:
        raise SteeringError(
            f"the result is {size:,} bytes, over the {MAX_RESULT_BYTES:,}-byte limit "
            "(keep documents out of events: send a reference)"
        )
    return text


def _not_json(constant: str) -> None:
    # Python reads NaN and Infinity, which no other JSON reader takes.
    raise ValueError(f"{constant} is not a JSON value")
