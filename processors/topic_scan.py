"""Read whole topics to their current end, for commands that need a snapshot of them (the
approvals inbox until the PostgreSQL projections serve it)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from agentstream.schemas.errors import ServiceUnavailableError
from agentstream.schemas.events import AvroRecord
from agentstream.streams.producer import Headers, message_headers
from agentstream.streams.serde import DecodeError, EventSerde
from agentstream.streams.settings import Settings
from agentstream.streams.topics import TopicSpec


@dataclass(frozen=True)
class Scanned:
    record: AvroRecord
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    headers: Headers = field(default_factory=list)


def _ends(
    consumer: Consumer, settings: Settings, specs: Sequence[TopicSpec], timeout: float
) -> dict[tuple[str, int], int]:
    """The end offset of every non-empty partition of the topics."""
    ends: dict[tuple[str, int], int] = {}
    try:
        metadata = consumer.list_topics(timeout=timeout)
        for spec in specs:
            topic = settings.topic(spec.name)
            found = metadata.topics.get(topic)
            if found is None or found.error is not None:
                continue
            for partition in found.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout
                )
                if high > low:
                    ends[(topic, partition)] = high
    except KafkaException as exc:
        raise ServiceUnavailableError(f"cannot read the topics: {exc}") from exc
    return ends


def scan_topics(
    settings: Settings, serde: EventSerde, specs: Sequence[TopicSpec], timeout: float = 30.0
) -> list[Scanned]:
    """Every decodable record of the topics up to their end as of the call (undecodable ones
    are skipped: consumers of those topics dead-letter them)."""
    consumer = Consumer(
        {
            **settings.kafka_config(),
            "group.id": f"agentstream-scan-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        ends = _ends(consumer, settings, specs, timeout)
        if not ends:
            return []
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        found: list[Scanned] = []
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(f"could not read {sorted(ends)} to the end in time")
            for msg in consumer.consume(5000, 0.5):
                topic, partition, offset = (
                    msg.topic() or "",
                    msg.partition() or 0,
                    msg.offset() or 0,
                )
                error = msg.error()
                if error is not None:
                    # Done at the end of the log, not at the high watermark: the embedded
                    # broker reports one that stops short of the last records of a batch. (At
                    # the end, the offset is past any transaction marker too.)
                    if error.code() == KafkaError._PARTITION_EOF and offset >= ends.get(
                        (topic, partition), 0
                    ):
                        ends.pop((topic, partition), None)
                    continue
                try:
                    found.append(
                        Scanned(
                            serde.decode(topic, msg.value()),
                            topic,
                            partition,
                            offset,
                            msg.key(),
                            message_headers(msg),
                        )
                    )
                except DecodeError:
                    continue
        return found
    finally:
        consumer.close()
