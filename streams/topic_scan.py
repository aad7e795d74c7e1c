"""Read whole topics to their current end, for commands that need a snapshot of them (the
approvals inbox until the PostgreSQL projections serve it)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from agentstream.schemas.errors import ServiceUnavailableError
from agentstream.schemas.events import AvroRecord
from agentstream.streams.consumer import reader_config
from agentstream.streams.log_end import Place, log_ends, read_to_end
from agentstream.streams.producer import Headers, message_headers
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import DecodeError, EventSerde
from agentstream.streams.topics import TopicSpec

__all__ = [
    "Scanned",
    "scan_topics",
]


@dataclass(frozen=True)
class Scanned:
    record: AvroRecord
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    headers: Headers = field(default_factory=list)


def _places(
    consumer: Consumer, settings: Settings, specs: Sequence[TopicSpec], timeout: float
) -> list[Place]:
    """Every partition of the topics that exist."""
    try:
        metadata = consumer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ServiceUnavailableError(f"cannot read the topics: {exc}") from exc
    places: list[Place] = []
    for spec in specs:
        topic = settings.topic(spec.name)
        found = metadata.topics.get(topic)
        if found is not None and found.error is None:
            places.extend((topic, partition) for partition in found.partitions)
    return places


def scan_topics(
    settings: Settings, serde: EventSerde, specs: Sequence[TopicSpec], timeout: float = 30.0
) -> list[Scanned]:
    """Every decodable record of the topics up to their end as of the call (undecodable ones
    are skipped: consumers of those topics dead-letter them)."""
    consumer = Consumer(reader_config(settings, "scan"))
    try:
        ends = log_ends(consumer, _places(consumer, settings, specs, timeout), timeout)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        found: list[Scanned] = []
        deadline = time.monotonic() + timeout
        for records in read_to_end(consumer, ends, batch=5000, poll=0.5, deadline=deadline):
            for msg in records:
                topic, partition = msg.topic() or "", msg.partition() or 0
                try:
                    record = serde.decode(topic, msg.value())
                except DecodeError:
                    continue
                found.append(
                    Scanned(
                        record, topic, partition, msg.offset() or 0, msg.key(), message_headers(msg)
                    )
                )
        return found
    finally:
        consumer.close()
