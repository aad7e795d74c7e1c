"""What every consumer of agent events checks before it uses a decoded record.

The record's type must be one its topic carries, and an agent event must be keyed by its
agent_id: per-agent order, and which processor owns an agent, rest on that key. A record that
fails goes to the dead-letter topic with the error class and reason given here, the same from the
processor, the workers, the projector and the typed consumer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE

from agentstream.schemas.errors import AgentStreamError
from agentstream.schemas.events import AvroRecord, Event
from agentstream.schemas.reasons import DeadLetterReason

__all__ = [
    "MAX_CLOCK_AHEAD",
    "Refused",
    "check_clock",
    "check_placement",
]

#: how far an event's own time may be ahead of its record's timestamp (the producing client's
#: clock when it sent it, or the broker's with LogAppendTime)
MAX_CLOCK_AHEAD = timedelta(seconds=60)


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


def check_clock(event: Event, timestamp: tuple[int, int]) -> None:
    """Raise :class:`Refused` if ``event`` says it happened later than ``MAX_CLOCK_AHEAD`` after
    its record was produced (``timestamp``: the record's, as confluent-kafka gives it). The
    state machine takes an event's time for "now": one stamped in the future would end other
    runs as past their deadline, or decide an approval's expiry, by one producer's clock."""
    kind, millis = timestamp
    if kind == TIMESTAMP_NOT_AVAILABLE or millis <= 0:
        return
    produced = datetime.fromtimestamp(millis / 1000, UTC)
    ahead = event.envelope.occurred_at - produced
    if ahead > MAX_CLOCK_AHEAD:
        raise Refused(
            DeadLetterReason.CLOCK_AHEAD,
            f"occurred_at {event.envelope.occurred_at.isoformat()} is "
            f"{ahead.total_seconds():,.0f} s after the record was produced "
            f"({produced.isoformat()}); producers' clocks must agree within "
            f"{MAX_CLOCK_AHEAD.total_seconds():.0f} s",
            event,
        )
