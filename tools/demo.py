"""The demo: for now a smoke round trip through the embedded stack (Avro-free)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from agentstream.schemas.errors import DeliveryError, ServiceUnavailableError
from agentstream.streams.settings import Settings

SMOKE_TOPIC = "agentstream.smoke"


@dataclass(frozen=True)
class SmokeResult:
    topic: str
    partition: int
    offset: int
    key: str
    value: dict[str, object]


def ensure_topic(settings: Settings, name: str, partitions: int = 1) -> None:
    admin = AdminClient(settings.kafka_config())
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        try:
            future.result(timeout=15)
        except Exception as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise ServiceUnavailableError(f"could not create topic {name}: {exc}") from exc


def smoke_round_trip(settings: Settings, timeout: float = 30.0) -> SmokeResult:
    """Produce one JSON event and read it back through a consumer group."""
    topic = settings.topic(SMOKE_TOPIC)
    ensure_topic(settings, topic)
    event_id = str(uuid.uuid4())
    payload = {"event_id": event_id, "type": "smoke", "sent_at_ms": int(time.time() * 1000)}
    producer = Producer({**settings.kafka_config(), "acks": "all", "enable.idempotence": True})
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    producer.produce(
        topic, key=event_id.encode(), value=json.dumps(payload).encode(), on_delivery=on_delivery
    )
    if producer.flush(timeout) or failures:
        raise DeliveryError(f"smoke event not acknowledged: {failures or 'timed out'}")

    consumer = Consumer(
        {
            **settings.kafka_config(),
            "group.id": f"agentstream-smoke-{event_id}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            value, partition, offset = msg.value(), msg.partition(), msg.offset()
            if msg.key() != event_id.encode() or value is None:
                continue
            consumer.commit(message=msg, asynchronous=False)
            return SmokeResult(
                topic=topic,
                partition=partition if partition is not None else -1,
                offset=offset if offset is not None else -1,
                key=event_id,
                value=json.loads(value),
            )
    finally:
        consumer.close()
    raise ServiceUnavailableError(f"smoke event was not consumed within {timeout:.0f}s")
