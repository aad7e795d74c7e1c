"""Audit rows: one per event, with where it was read and its payload as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentstream.projections.sanitize import sanitize
from agentstream.schemas.events import EVENT_TYPES, Event

__all__ = [
    "AUDIT_COLUMNS",
    "EVENT_BY_NAME",
    "SourcedEvent",
    "event_from_payload",
]

#: Event classes by the short name stored in ``agent_events.type``.
EVENT_BY_NAME: dict[str, type[Event]] = {cls.__name__: cls for cls in EVENT_TYPES.values()}

AUDIT_COLUMNS = (
    "event_id",
    "type",
    "agent_id",
    "tenant_id",
    "run_id",
    "call_id",
    "correlation_id",
    "causation_id",
    "occurred_at",
    "source",
    "schema_version",
    "topic",
    "partition",
    "offset",
    "payload",
    "sanitized",
)


@dataclass(slots=True)
class SourcedEvent:
    """A decoded, sanitized event and where it was read."""

    event: Event
    topic: str
    partition: int
    offset: int
    payload: str
    sanitized: bool = False

    @classmethod
    def of(cls, event: Event, topic: str, partition: int, offset: int) -> SourcedEvent:
        clean, payload, sanitized = sanitize(event)
        return cls(clean, topic, partition, offset, payload, sanitized)

    def audit_row(self) -> tuple[Any, ...]:
        env = self.event.envelope
        return (
            env.event_id,
            type(self.event).__name__,
            env.agent_id,
            env.tenant_id,
            env.run_id,
            getattr(self.event, "call_id", None),
            env.correlation_id,
            env.causation_id,
            env.occurred_at,
            env.source,
            env.schema_version,
            self.topic,
            self.partition,
            self.offset,
            self.payload,
            self.sanitized,
        )


def event_from_payload(type_name: str, payload: dict[str, Any]) -> Event:
    """The pydantic event of an audit row (``type`` and ``payload`` columns)."""
    try:
        cls = EVENT_BY_NAME[type_name]
    except KeyError:
        raise ValueError(f"unknown event type {type_name!r}") from None
    return cls.model_validate(payload)
