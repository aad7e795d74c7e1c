"""Dead letters: a record that cannot be decoded or applied goes to ``agent.dlq`` with its
original bytes and the reason, and the consumer moves on. Nothing is dropped silently."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from agentstream.schemas.events import DeadLetter, Event, RecordHeader
from agentstream.schemas.reasons import DeadLetterReason
from agentstream.streams.producer import AgentStreamProducer, Delivery, Headers, wait_delivery
from agentstream.streams.runtime import metrics
from agentstream.streams.topics import DLQ

__all__ = [
    "ERROR_CLASS",
    "MAX_ORIGINAL_VALUE",
    "ORIGINAL_OFFSET",
    "ORIGINAL_PARTITION",
    "ORIGINAL_TOPIC",
    "REASON",
    "SOURCE",
    "DeadLetterSink",
    "clipped",
    "dead_letter_id",
    "headers_for",
    "letter",
]

#: Header names on every dead letter, for tools that read headers and not the Avro value.
REASON = "agentstream.dlq.reason"
ERROR_CLASS = "agentstream.dlq.error_class"
ORIGINAL_TOPIC = "agentstream.dlq.original_topic"
ORIGINAL_PARTITION = "agentstream.dlq.original_partition"
ORIGINAL_OFFSET = "agentstream.dlq.original_offset"
SOURCE = "agentstream.dlq.source"

_DLQ_IDS = uuid.UUID("6f1d8d38-2f0e-4a44-9d0e-3c5b1f0c7a11")
_MAX_REASON = 2000
#: Bytes of the original value a dead letter keeps. A producer that raised its size limit can
#: write a record larger than the DLQ accepts; whole, its dead letter would be refused and the
#: consumer would stop on it at every restart.
MAX_ORIGINAL_VALUE = 512 * 1024


def clipped(value: bytes | None, reason: str) -> tuple[bytes | None, str]:
    """The original value as a dead letter keeps it, and the reason (saying so if it was cut)."""
    reason = reason[:_MAX_REASON]
    if value is None or len(value) <= MAX_ORIGINAL_VALUE:
        return value, reason
    note = f" [original value of {len(value)} bytes cut to its first {MAX_ORIGINAL_VALUE}]"
    return value[:MAX_ORIGINAL_VALUE], reason + note


def dead_letter_id(topic: str, partition: int, offset: int) -> str:
    """Stable per source record, so a dead letter re-sent after a crash can be deduped."""
    return str(uuid.uuid5(_DLQ_IDS, f"{topic}/{partition}/{offset}"))


def letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Iterable[tuple[str, bytes | None]] | None,
    reason: str,
    error_class: DeadLetterReason,
    source: str,
    event: Event | None = None,
) -> DeadLetter:
    """The dead letter of one source record, its value clipped, with the ids of ``event`` when
    the record decoded to one; counted for ``/metrics``."""
    value, reason = clipped(value, reason)
    metrics.DEAD_LETTERS.labels(source, error_class).inc()
    return DeadLetter(
        dead_letter_id=dead_letter_id(topic, partition, offset),
        original_topic=topic,
        original_partition=partition,
        original_offset=offset,
        original_key=key,
        original_value=value,
        original_headers=[RecordHeader(key=k, value=v) for k, v in headers or []],
        reason=reason,
        error_class=error_class,
        agent_id=event.envelope.agent_id if event else None,
        event_id=event.envelope.event_id if event else None,
        failed_at=datetime.now(UTC),
        source=source,
    )


def headers_for(letter: DeadLetter) -> Headers:
    """The reason headers every dead letter carries beside its Avro value."""
    return [
        (REASON, letter.reason.encode()),
        (ERROR_CLASS, letter.error_class.encode()),
        (ORIGINAL_TOPIC, letter.original_topic.encode()),
        (ORIGINAL_PARTITION, str(letter.original_partition).encode()),
        (ORIGINAL_OFFSET, str(letter.original_offset).encode()),
        (SOURCE, letter.source.encode()),
    ]


class DeadLetterSink:
    """Writes dead letters for one service (``source``) and waits for the acknowledgement."""

    def __init__(self, producer: AgentStreamProducer, source: str) -> None:
        self.producer = producer
        self.source = source
        self.topic = producer.settings.topic(DLQ.name)

    def send(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        reason: str,
        error_class: DeadLetterReason,
        event: Event | None = None,
    ) -> Delivery:
        dead = letter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            headers=headers,
            reason=reason,
            error_class=error_class,
            source=self.source,
            event=event,
        )
        encoded = self.producer.serde.encode(self.topic, dead)
        # Keyed like the original so an agent's dead letters stay in order beside each other.
        future = self.producer.produce_raw(self.topic, key, encoded, headers_for(dead))
        return wait_delivery(future)
