"""The serde's fast path writes and reads exactly what confluent-kafka's serializers do."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.schema_registry import topic_record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from eventgen import records
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from agentstream.schemas.contract import avro_schema_str
from agentstream.schemas.events import RECORD_TYPES, AvroRecord
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client

pytestmark = pytest.mark.integration
TOPIC = f"fastpath-{uuid.uuid4().hex[:6]}"
any_record = st.sampled_from(sorted(RECORD_TYPES)).flatmap(lambda n: records(RECORD_TYPES[n]))


@pytest.fixture(scope="module")
def serde(settings: Settings) -> EventSerde:
    return EventSerde(registry_client(settings.require_schema_registry_url()))


@hsettings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(record=any_record)
def test_fast_encode_and_decode_match_the_confluent_serializers(
    record: AvroRecord, serde: EventSerde
) -> None:
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    schema = avro_schema_str(record.avro_name)
    reference = AvroSerializer(
        serde.client, schema, conf={"subject.name.strategy": topic_record_subject_name_strategy}
    )
    serde.encode(TOPIC, record)  # the first one goes through the serializer; now the fast path
    fast = serde.encode(TOPIC, record)
    assert fast == reference(record.to_avro(), ctx)
    assert AvroDeserializer(serde.client, schema)(fast, ctx) == record.to_avro()
    serde.decode(TOPIC, fast)
    assert serde.decode(TOPIC, fast) == record  # the second decode takes the fast path
