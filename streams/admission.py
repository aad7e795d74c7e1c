"""What every consumer of agent events checks before it uses a decoded record.

The record's type must be one its topic carries, and an agent event must be keyed by its
agent_id: per-agent order, and which processor owns an agent, rest on that key. A record that
fails goes to the dead-letter topic with the error class and reason given here, the same from the
processor, the workers, the projector and the typed consumer.
"""

from __future__ import annotations

from agentstream.schemas.errors import AgentStreamError
from agentstream.schemas.events import AvroRecord, Event
from agentstream.schemas.reasons import DeadLetterReason

__all__ = [
    "Refused",
    "check_placement",
]


class Refused(AgentStreamError):
    """A record to dead-letter: ``error_class`` is the stable kind, the message the reason.
    ``event`` is the decoded event when there is one, for the dead letter's ids."""

    def __init__(
        self, error_class: DeadLetterReason, reason: str, event: Event | None = None
    ) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.event = event


def check_placement(
    record: AvroRecord, topic: str, carried: tuple[type[AvroRecord], ...], key: bytes | None
) -> None:
    """Raise :class:`Refused` unless ``record`` is of a type in ``carried`` and, if it is an
    agent event, ``key`` is its agent_id."""
    event = record if isinstance(record, Event) else None
    if not isinstance(record, carried):
        raise Refused(
            DeadLetterReason.WRONG_TOPIC,
            f"{type(record).__name__} does not belong on {topic}",
            event,
        )
    if event is None:
        return
    agent_id = event.envelope.agent_id
    if not key:
        raise Refused(
            DeadLetterReason.MISSING_KEY,
            f"agent events are keyed by agent_id ({agent_id!r})",
            event,
        )
    if key != agent_id.encode():
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(
                DeadLetterReason.INVALID_KEY, "the key is not UTF-8 text", event
            ) from None
        raise Refused(
            DeadLetterReason.KEY_MISMATCH, f"key {text!r} is not the agent_id {agent_id!r}", event
        )
