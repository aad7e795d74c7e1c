"""Bad records go to agent.dlq with their bytes and a reason; good ones around them arrive."""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import Iterator

import pytest
from builders import agent_input, envelope
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from agentstream.schemas.contract import avro_schema_str
from agentstream.schemas.events import AgentInput, DeadLetter, RunCompleted, TokenUsage
from agentstream.streams import dlq
from agentstream.streams.consumer import Consumed, EventConsumer
from agentstream.streams.dlq import DeadLetterSink
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topics import DLQ, INPUTS, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def isolated(settings: Settings) -> Settings:
    isolated = settings.model_copy(update={"topic_prefix": f"dl{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    return isolated


@pytest.fixture
def producer(isolated: Settings) -> Iterator[AgentStreamProducer]:
    with AgentStreamProducer(isolated) as producer:
        yield producer


def _framed(schema_id: int, body: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


def _drain(consumer: EventConsumer, want: int, timeout: float = 30) -> list[Consumed]:
    got: list[Consumed] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += consumer.poll(timeout=0.5)
    return got


def _read_dlq(
    isolated: Settings, serde: EventSerde, want: int
) -> list[tuple[DeadLetter, dict[str, bytes]]]:
    consumer = Consumer(
        {
            **isolated.kafka_config(),
            "group.id": f"dlq-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([isolated.topic(DLQ.name)])
    letters = []
    deadline = time.monotonic() + 30
    try:
        while len(letters) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            letter = serde.decode(msg.topic() or "", msg.value())
            assert isinstance(letter, DeadLetter)
            headers = {k: v for k, v in msg.headers() or [] if isinstance(v, bytes)}
            letters.append((letter, headers))
    finally:
        consumer.close()
    return letters


def test_each_kind_of_bad_record_is_dead_lettered_and_good_ones_arrive(
    isolated: Settings, producer: AgentStreamProducer
) -> None:
    serde = producer.serde
    inputs_topic = isolated.topic(INPUTS.name)
    good = [agent_input(f"agent-{i}", f"good {i}") for i in range(6)]
    good_value = serde.encode(inputs_topic, good[0])
    good_schema_id = struct.unpack(">bI", good_value[:5])[1]

    # valid Avro of a schema the contract accepts, but a value pydantic rejects
    raw_serializer = AvroSerializer(
        serde.client,
        avro_schema_str(AgentInput.avro_name),
        conf={"subject.name.strategy": topic_record_subject_name_strategy},
    )
    invalid_event = raw_serializer(
        {**good[0].to_avro(), "envelope": {**good[0].envelope.to_avro(), "agent_id": "has space"}},
        SerializationContext(inputs_topic, MessageField.VALUE),
    )
    outcome = RunCompleted(
        envelope=envelope("agent-x", run_id="r1"),
        output="done",
        steps=1,
        tool_calls=0,
        usage=TokenUsage(),
        started_at=envelope().occurred_at,
    )

    bad: dict[str, tuple[bytes | None, bytes | None]] = {
        "undecodable": (b"agent-0", _framed(good_schema_id, b"\xff\xff\xff")),
        "wrong_magic_byte": (b"agent-0", b"\x07" + good_value[1:]),
        "unknown_schema_id": (b"agent-0", _framed(987654, good_value[5:])),
        "truncated": (b"agent-0", b"\x00\x00"),
        "missing_key": (None, good_value),
        "key_mismatch": (b"someone-else", good_value),
        "invalid_key": (b"\xff\xfe", good_value),
        "missing_value": (b"agent-0", None),
        "invalid_event": (b"has space", invalid_event),
        "wrong_topic": (b"agent-x", serde.encode(inputs_topic, outcome)),
    }
    # interleave: good, bad, good, bad, ...
    good_iter = iter(good)
    producer.send(next(good_iter))
    for key, value in bad.values():
        producer.produce_raw(inputs_topic, key, value).result(10)
        nxt = next(good_iter, None)
        if nxt is not None:
            producer.send(nxt)
    producer.flush()

    sink = DeadLetterSink(producer, source="test-consumer")
    with EventConsumer(
        isolated, serde, group_id=f"g-{uuid.uuid4()}", topics=[INPUTS], dead_letters=sink
    ) as consumer:
        received = _drain(consumer, len(good))
        consumer.commit()

    # every good record arrives once (they are keyed by agent, so spread over partitions)
    assert sorted((c.record for c in received), key=lambda r: r.event_id) == sorted(
        good, key=lambda r: r.event_id
    )
    assert all(c.key == c.record.agent_id for c in received)  # type: ignore[attr-defined]

    letters = _read_dlq(
        isolated, EventSerde(registry_client(isolated.require_schema_registry_url())), len(bad)
    )
    by_class = {letter.error_class: (letter, headers) for letter, headers in letters}
    assert set(by_class) == set(bad)
    for error_class, (key, value) in bad.items():
        letter, headers = by_class[error_class]
        assert letter.original_key == key, error_class
        assert letter.original_value == value, error_class
        assert letter.original_topic == inputs_topic
        assert letter.reason, error_class
        assert headers[dlq.ERROR_CLASS] == error_class.encode()
        assert headers[dlq.REASON] == letter.reason.encode()
        assert headers[dlq.ORIGINAL_OFFSET] == str(letter.original_offset).encode()
        assert letter.source == "test-consumer"
