"""From consumed Kafka messages to events the writer can store, for the projector and the rebuild.

A record that is not a valid agent event of its topic, keyed by its agent, is dead-lettered with
the reason and acknowledged by the broker before the batch that skips it can commit, so a record
is always either projected or in the DLQ. The same holds for events PostgreSQL refuses
(:meth:`Intake.dead_letter_unwritable`, called by the writer inside its transaction).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import Message

from agentstream.projections.audit import SourcedEvent
from agentstream.projections.writer import Batch, Unwritable
from agentstream.schemas.events import Event
from agentstream.schemas.reasons import DeadLetterReason
from agentstream.streams.admission import Refused, check_placement
from agentstream.streams.dlq import DeadLetterSink
from agentstream.streams.producer import message_headers
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import DecodeError, EventSerde
from agentstream.streams.topics import DEAD_LETTERED_BY_CONSUMER, TopicSpec

__all__ = [
    "Intake",
    "Prepared",
    "left_to_consumers",
]

log = get_logger(__name__)


@dataclass
class Prepared:
    """A batch for the writer, and the messages behind its events (to dead-letter them)."""

    batch: Batch = field(default_factory=lambda: Batch([], {}))
    messages: dict[tuple[str, int, int], Message] = field(default_factory=dict)

    def add(self, msg: Message, event: SourcedEvent | None) -> None:
        """Record ``msg`` as consumed, with its event unless it was dead-lettered."""
        self.batch.positions[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
        if event is not None:
            self.batch.events.append(event)
            self.messages[(event.topic, event.partition, event.offset)] = msg


def left_to_consumers(settings: Settings) -> frozenset[str]:
    """The physical topics whose bad records another service dead-letters."""
    return frozenset(settings.topic(spec.name) for spec in DEAD_LETTERED_BY_CONSUMER)


class Intake:
    """Decodes and checks one message at a time; dead-letters what cannot be projected."""

    def __init__(
        self,
        serde: EventSerde,
        dead_letters: DeadLetterSink,
        specs: Mapping[str, TopicSpec],
        left_to_consumers: frozenset[str] = frozenset(),
    ) -> None:
        self.serde = serde
        self.dead_letters = dead_letters
        self.specs = specs
        #: physical topics whose bad records their own consumer dead-letters, not this intake
        self.left_to_consumers = left_to_consumers
        self.left = 0
        self._carried = {
            topic: tuple(t for t in spec.value_types if issubclass(t, Event))
            for topic, spec in specs.items()
        }
        self.dead_lettered = 0

    def take(self, msg: Message) -> SourcedEvent | None:
        """The message's event, or None once it is dead-lettered. Raises AgentStreamError when
        the schema registry or the DLQ fails, which is no fault of the record."""
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        event: Event | None = None
        try:
            event = self._decode(msg, topic)
            return SourcedEvent.of(event, topic, partition, offset)
        except Refused as rejected:
            if topic in self.left_to_consumers:
                # Dead-lettered by the service that consumes it; projected as nothing here.
                log.info(
                    "left_to_consumer", topic=topic, offset=offset, error_class=rejected.error_class
                )
                self.left += 1
            else:
                self._send(msg, rejected.error_class, str(rejected), rejected.event)
        except ValueError as exc:  # the event cannot be serialized to JSON
            self._send(msg, DeadLetterReason.UNWRITABLE, f"{type(exc).__name__}: {exc}", event)
        return None

    def _decode(self, msg: Message, topic: str) -> Event:
        try:
            record = self.serde.decode(topic, msg.value())
        except DecodeError as exc:
            raise Refused(exc.error_class, str(exc)) from exc
        check_placement(record, topic, self._carried.get(topic, ()), msg.key())
        assert isinstance(record, Event)  # every type carried is an agent event
        return record

    def dead_letter_unwritable(self, refused: list[Unwritable], prepared: Prepared) -> None:
        for item in refused:
            event = item.event
            msg = prepared.messages.get((event.topic, event.partition, event.offset))
            if msg is not None:
                reason = f"PostgreSQL refused the row ({item.error_class}): {item.reason}"
                self._send(msg, DeadLetterReason.UNWRITABLE, reason, event.event)

    def _send(
        self, msg: Message, error_class: DeadLetterReason, reason: str, event: Event | None
    ) -> None:
        log.warning(
            "dead_letter",
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            error_class=error_class,
            reason=reason,
        )
        self.dead_letters.send(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=msg.key(),
            value=msg.value(),
            headers=message_headers(msg),
            reason=reason,
            error_class=error_class,
            event=event,
        )
        self.dead_lettered += 1
