"""The producer SDK: validate, encode, send, and report the broker's acknowledgement."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaError, Message, Producer
from pydantic import ValidationError

from agentstream.schemas.errors import DeliveryError, SerializationError
from agentstream.schemas.events import (
    AgentInput,
    AgentStateSnapshot,
    AvroRecord,
    ChangelogMarker,
    DeadLetter,
    Envelope,
    Event,
)
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topics import topic_for

__all__ = [
    "MAX_VALUE_BYTES",
    "AgentStreamProducer",
    "Delivery",
    "Headers",
    "message_headers",
    "new_envelope",
    "new_input",
    "record_key",
    "wait_delivery",
]


def new_input(
    agent_id: str,
    text: str,
    *,
    tenant_id: str = "default",
    metadata: dict[str, str] | None = None,
    source: str = "sdk",
    kind: str | None = None,
) -> AgentInput:
    """A new input for ``agent_id``, a run's start: its own event id, which is also the
    correlation id of everything the run does, stamped now. ``kind`` names the agent kind to
    serve it (bound by the agent's first input; None: the one it has, or the default kind).
    Every entrance (SDK, CLI, HTTP ingress) builds its inputs here."""
    envelope = new_envelope(agent_id, tenant_id=tenant_id, source=source)
    return AgentInput(envelope=envelope, text=text, metadata=metadata or {}, kind=kind)


def new_envelope(
    agent_id: str,
    *,
    tenant_id: str = "default",
    run_id: str | None = None,
    source: str = "sdk",
) -> Envelope:
    """The envelope of a new event from outside the runtime (an input, a cancel, a pause, a
    fact, a callback's result): its own event id, which is also its correlation id, stamped
    now. Every entrance (SDK, CLI, HTTP ingress, console) builds its events on it."""
    event_id = str(uuid.uuid4())
    return Envelope(
        event_id=event_id,
        agent_id=agent_id,
        tenant_id=tenant_id,
        run_id=run_id,
        correlation_id=event_id,
        occurred_at=datetime.now(UTC),
        source=source,
    )


#: librdkafka's default message.max.bytes; larger values are refused before sending.
MAX_VALUE_BYTES = 1_000_000

Headers = list[tuple[str, bytes | None]]


def message_headers(msg: Message) -> Headers:
    """A record's headers as (name, bytes) pairs, whatever form librdkafka handed them in."""
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in pairs]


@dataclass(frozen=True)
class Delivery:
    """Where the broker stored a record."""

    topic: str
    partition: int
    offset: int


def record_key(record: AvroRecord) -> str | None:
    """The Kafka key of a record: the agent it belongs to."""
    if isinstance(record, Event):
        return record.envelope.agent_id
    if isinstance(record, AgentStateSnapshot):
        return record.agent_id
    if isinstance(record, DeadLetter):
        return record.agent_id
    if isinstance(record, ChangelogMarker):
        # The changelog is compacted, and a compacted topic takes keyed records only; one
        # marker per partition is all a restore needs.
        return f"__marker__/{record.partition}"
    return None


class AgentStreamProducer:
    """Idempotent (acks=all) producer of agentstream records.

    ``send`` blocks until the broker acknowledged the record and raises DeliveryError if it did
    not; ``send_async`` returns a future of the same.
    """

    def __init__(
        self,
        settings: Settings,
        serde: EventSerde | None = None,
        *,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.serde = serde or EventSerde(registry_client(settings.require_schema_registry_url()))
        self._producer = Producer(
            {
                **settings.kafka_config(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 2,
                # Java's default: agents land on the same partitions whichever client produced.
                "partitioner": "murmur2_random",
                **(extra_config or {}),
            }
        )
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll_forever, daemon=True, name="producer")
        self._poller.start()

    def _poll_forever(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    def encode(self, record: AvroRecord, topic: str) -> bytes:
        try:
            # Models built with model_construct skip validation; check before anything leaves.
            type(record).model_validate(record.model_dump())
        except ValidationError as exc:
            raise SerializationError(f"invalid {type(record).__name__}: {exc}") from exc
        value = self.serde.encode(topic, record)
        if len(value) > MAX_VALUE_BYTES:
            raise SerializationError(
                f"{type(record).__name__} is {len(value)} bytes encoded, over the "
                f"{MAX_VALUE_BYTES} byte limit; keep large payloads out of events"
            )
        return value

    def send_async(
        self,
        record: AvroRecord,
        *,
        topic: str | None = None,
        headers: Headers | None = None,
        timestamp: datetime | None = None,
    ) -> Future[Delivery]:
        """``timestamp``: the record's Kafka timestamp (default: when librdkafka produces it)."""
        physical = topic or self.settings.topic(topic_for(type(record)).name)
        value = self.encode(record, physical)
        key = record_key(record)
        return self.produce_raw(
            physical,
            key.encode() if key is not None else None,
            value,
            headers,
            timestamp=timestamp,
        )

    def send(
        self,
        record: AvroRecord,
        *,
        topic: str | None = None,
        headers: Headers | None = None,
        timeout: float = 30.0,
        timestamp: datetime | None = None,
    ) -> Delivery:
        future = self.send_async(record, topic=topic, headers=headers, timestamp=timestamp)
        return wait_delivery(future, timeout)

    def produce_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        *,
        partition: int | None = None,
        timeout: float = 30.0,
        timestamp: datetime | None = None,
    ) -> Future[Delivery]:
        """Send bytes as they are (used for dead letters and redrives); to ``partition`` if
        given, else where the key hashes."""
        future: Future[Delivery] = Future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                future.set_exception(DeliveryError(f"delivery to {topic} failed: {err}"))
            else:
                future.set_result(
                    Delivery(msg.topic() or topic, msg.partition() or 0, msg.offset() or 0)
                )

        wire_headers: list[tuple[str, str | bytes | None]] = list(headers or [])
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        if timestamp is not None:
            extra["timestamp"] = int(timestamp.timestamp() * 1000)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=wire_headers,
                    on_delivery=on_delivery,
                    **extra,
                )
                return future
            except BufferError:
                # The local queue is full: wait for acknowledgements to drain it.
                if time.monotonic() > deadline:
                    raise DeliveryError(
                        "the producer queue stayed full; is the broker up?"
                    ) from None
                time.sleep(0.01)

    def flush(self, timeout: float = 30.0) -> None:
        if self._producer.flush(timeout) > 0:
            raise DeliveryError(f"records still unacknowledged after {timeout:.0f}s")

    def close(self, timeout: float = 30.0) -> None:
        if self._closed.is_set():
            return
        try:
            self.flush(timeout)
        finally:
            self._closed.set()
            self._poller.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def wait_delivery(future: Future[Delivery], timeout: float = 30.0) -> Delivery:
    try:
        return future.result(timeout)
    except TimeoutError:
        raise DeliveryError(
            f"no acknowledgement within {timeout:.0f}s; is the broker up?"
        ) from None
