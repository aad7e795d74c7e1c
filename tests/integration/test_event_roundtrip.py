"""Every record type survives encode → registry → broker → decode unchanged (property test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition
from eventgen import records
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from agentstream.schemas.events import RECORD_TYPES, AvroRecord
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topics import ensure_topics, topic_for

pytestmark = pytest.mark.integration

any_record = st.sampled_from(sorted(RECORD_TYPES)).flatmap(lambda n: records(RECORD_TYPES[n]))


@pytest.fixture(scope="module")
def isolated(settings: Settings) -> Settings:
    isolated = settings.model_copy(update={"topic_prefix": f"rt{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    return isolated


@pytest.fixture(scope="module")
def producer(isolated: Settings) -> Iterator[AgentStreamProducer]:
    with AgentStreamProducer(isolated) as producer:
        yield producer


@pytest.fixture(scope="module")
def reader(isolated: Settings) -> Iterator[Consumer]:
    consumer = Consumer(
        {**isolated.kafka_config(), "group.id": "unused", "enable.auto.commit": False}
    )
    yield consumer
    consumer.close()


@pytest.fixture(scope="module")
def decoder(isolated: Settings) -> EventSerde:
    # Its own registry client: decoding must find the writer schema by id, not from a cache.
    return EventSerde(registry_client(isolated.require_schema_registry_url()))


@hsettings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(record=any_record)
def test_any_record_round_trips_through_registry_and_broker(
    record: AvroRecord,
    isolated: Settings,
    producer: AgentStreamProducer,
    reader: Consumer,
    decoder: EventSerde,
) -> None:
    topic = isolated.topic(topic_for(type(record)).name)
    delivery = producer.send(record)
    assert delivery.topic == topic

    reader.assign([TopicPartition(topic, delivery.partition, delivery.offset)])
    msg = None
    for _ in range(100):
        msg = reader.poll(0.1)
        if msg is not None and msg.error() is None:
            break
    assert msg is not None and msg.error() is None, "the produced record was not read back"
    assert msg.offset() == delivery.offset

    decoded = decoder.decode(topic, msg.value())
    assert decoded == record
    assert type(decoded) is type(record)
