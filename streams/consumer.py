"""Consumers: the one group configuration every group member uses, and a typed consumer that
yields decoded records with their position and routes bad ones to the DLQ."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from agentstream.schemas.errors import ServiceUnavailableError
from agentstream.schemas.events import AvroRecord
from agentstream.schemas.reasons import DeadLetterReason
from agentstream.streams.admission import Refused, check_placement
from agentstream.streams.dlq import DeadLetterSink
from agentstream.streams.producer import Headers, message_headers
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.settings import KafkaConfig, Settings
from agentstream.streams.serde import DecodeError, EventSerde
from agentstream.streams.topics import TopicSpec

__all__ = [
    "ASSIGNMENT",
    "Consumed",
    "EventConsumer",
    "group_config",
    "heartbeat_interval_ms",
    "reader_config",
    "records",
]

log = get_logger(__name__)

#: Partition N of every subscribed topic goes to the same member, as Kafka Streams and Faust
#: co-partition: agent topics share one partition count and key, so one member owns all of an
#: agent's events (and its state). Eager: a rebalance revokes every partition first. Not
#: cooperative-sticky: it does not co-partition, and on the embedded broker a member that joins
#: gets nothing and what the others gave up is never handed back.
ASSIGNMENT = "range"


def records(messages: list[Message]) -> Iterator[Message]:
    """The records among what ``consume`` returned: partition-EOF events dropped, other errors
    logged and dropped (librdkafka retries them itself; a fatal one raises on the next call)."""
    for msg in messages:
        error = msg.error()
        if error is None:
            yield msg
        elif error.code() != KafkaError._PARTITION_EOF:
            log.warning("consume_error", error=str(error))


def reader_config(
    settings: Settings,
    purpose: str,
    *,
    eof: bool = True,
    fetch_wait_ms: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The configuration of a consumer that assigns itself partitions and never joins a group or
    commits (restores, scans, replays, tools), declared once. Its group id is unique, only
    because librdkafka wants one. ``eof`` reports each partition's end; ``fetch_wait_ms`` bounds
    a fetch's wait for data (librdkafka's 500 ms would stall a read that follows the log's end).
    """
    return {
        **settings.kafka_config(),
        "group.id": f"agentstream-{purpose}-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": eof,
        **({"fetch.wait.max.ms": fetch_wait_ms} if fetch_wait_ms is not None else {}),
        **(extra or {}),
    }


def heartbeat_interval_ms(settings: Settings) -> int:
    """A sixth of the session timeout. A member learns of a rebalance only from a heartbeat's
    answer, so librdkafka's default of 3 s let each join wait up to 3 s more for the members
    already in the group to rejoin (measured on both brokers); a sixth also leaves several
    heartbeats to lose before the session ends."""
    return max(100, settings.group_session_timeout_ms // 6)


def group_config(
    settings: Settings,
    group_id: str,
    *,
    instance_id: str | None = None,
    low_latency: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The configuration of a consumer-group member, declared once for every service.

    ``low_latency`` is for members on a run's path (the processor, the workers): their fetches
    wait ``AGENTSTREAM_FETCH_WAIT_MS`` at most instead of librdkafka's 500 ms.
    """
    wait: KafkaConfig = {"fetch.wait.max.ms": settings.fetch_wait_ms} if low_latency else {}
    return {
        **settings.kafka_config(),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": settings.group_session_timeout_ms,
        "heartbeat.interval.ms": heartbeat_interval_ms(settings),
        "partition.assignment.strategy": ASSIGNMENT,
        # librdkafka waits up to 500 ms for a fetch to fill; each agent step is a hop through a
        # consumer, so that wait would dominate a run's latency.
        **wait,
        # A static member that restarts gets its partitions back at once instead of after the
        # session timeout. The embedded broker holds a static member's join and its sync 3 s
        # each, whatever the configuration (its source has it as a constant).
        **({"group.instance.id": instance_id} if instance_id else {}),
        **(extra or {}),
    }


@dataclass(frozen=True)
class Consumed:
    """A decoded record and where it came from."""

    record: AvroRecord
    topic: str
    partition: int
    offset: int
    key: str | None
    headers: Headers
    timestamp_ms: int


class EventConsumer:
    """Consumes agent topics in a consumer group, with manual commits.

    ``poll`` returns the decoded records of one batch; records that cannot be decoded, have no
    key, a key other than their agent, or a type their topic does not carry are dead-lettered
    (and acknowledged by the DLQ) before ``poll`` returns, so committing never loses one.
    """

    def __init__(
        self,
        settings: Settings,
        serde: EventSerde,
        *,
        group_id: str,
        topics: Sequence[TopicSpec],
        dead_letters: DeadLetterSink,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.serde = serde
        self.dead_letters = dead_letters
        self._specs = {settings.topic(spec.name): spec for spec in topics}
        self._consumer = Consumer(group_config(settings, group_id, extra=extra_config))
        self._consumer.subscribe(list(self._specs))
        self._positions: dict[tuple[str, int], int] = {}

    def poll(self, max_records: int = 500, timeout: float = 1.0) -> list[Consumed]:
        messages = self._consumer.consume(max_records, timeout)
        decoded: list[Consumed] = []
        for msg in records(messages):
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            self._positions[(topic, partition)] = offset + 1
            try:
                decoded.append(self._decode(msg, topic, partition, offset))
            except Refused as rejected:
                self._dead_letter(msg, rejected)
        return decoded

    def _decode(self, msg: Message, topic: str, partition: int, offset: int) -> Consumed:
        try:
            record = self.serde.decode(topic, msg.value())
        except DecodeError as exc:
            raise Refused(exc.error_class, str(exc)) from exc
        spec = self._specs.get(topic)
        check_placement(record, topic, spec.value_types if spec else (AvroRecord,), msg.key())
        key = _text_key(msg.key())
        timestamp = msg.timestamp()[1]
        return Consumed(record, topic, partition, offset, key, message_headers(msg), timestamp)

    def _dead_letter(self, msg: Message, rejected: Refused) -> None:
        log.warning(
            "dead_letter",
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            error_class=rejected.error_class,
            reason=str(rejected),
        )
        self.dead_letters.send(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=msg.key(),
            value=msg.value(),
            headers=message_headers(msg),
            reason=str(rejected),
            error_class=rejected.error_class,
            event=rejected.event,
        )

    def records(self, timeout: float = 1.0) -> Iterator[Consumed]:
        """Decoded records, forever; the caller commits when it has handled them."""
        while True:
            yield from self.poll(timeout=timeout)

    def commit(self) -> None:
        """Commit the position after every record ``poll`` has returned (or dead-lettered)."""
        if not self._positions:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            raise ServiceUnavailableError(f"offset commit failed: {exc}") from exc
        self._positions.clear()

    def assignment(self) -> list[TopicPartition]:
        return list(self._consumer.assignment())

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _text_key(raw: bytes | str | None) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(DeadLetterReason.INVALID_KEY, "the key is not UTF-8 text") from None
