"""Schema evolution under the registry's BACKWARD rule, and downstream needing nothing of ours."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest
from builders import agent_input
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    topic_record_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from agentstream.schemas.contract import avro_schema
from agentstream.schemas.events import AgentInput
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde
from agentstream.streams.topics import INPUTS, OUTCOMES, ensure_topics

pytestmark = pytest.mark.integration


def _v2(extra_field: dict[str, Any]) -> str:
    schema = avro_schema(AgentInput.avro_name)
    schema["fields"].append(extra_field)
    return json.dumps(schema)


def test_v1_writer_v2_reader_and_an_incompatible_change_refused(settings: Settings) -> None:
    client = SchemaRegistryClient({"url": settings.require_schema_registry_url()})
    topic = f"evolution-{uuid.uuid4().hex[:8]}"
    ctx = SerializationContext(topic, MessageField.VALUE)
    subject = f"{topic}-{AgentInput.avro_name}"

    # v1: today's contract, written by agentstream's serde
    original = agent_input("agent-7", "v1 says hi")
    v1_bytes = EventSerde(client).encode(topic, original)

    # v2 adds a field with a default: BACKWARD compatible, registered as version 2
    v2 = _v2({"name": "priority", "type": "int", "default": 0})
    v2_id = client.register_schema(subject, Schema(v2, "AVRO"))
    assert client.get_latest_version(subject).version == 2

    # a v2 reader reads v1 data, filling the default
    v2_reader = AvroDeserializer(client, v2)
    decoded = v2_reader(v1_bytes, ctx)
    assert decoded["priority"] == 0
    assert decoded["text"] == "v1 says hi"

    # and today's (v1) reader still reads what a v2 writer wrote, ignoring the new field
    v2_writer = AvroSerializer(
        client,
        v2,
        conf={
            "auto.register.schemas": False,
            "use.latest.version": True,
            "subject.name.strategy": topic_record_subject_name_strategy,
        },
    )
    v2_bytes = v2_writer({**original.to_avro(), "priority": 5}, ctx)
    assert v2_bytes is not None and int.from_bytes(v2_bytes[1:5], "big") == v2_id
    assert EventSerde(client).decode(topic, v2_bytes) == original

    # v3 adds a field without a default: v3 readers could not read v2 data, so it is refused
    v3 = _v2({"name": "mandatory", "type": "string"})
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(subject, Schema(v3, "AVRO"))
    assert refused.value.http_status_code == 409
    assert [v for v in client.get_versions(subject)] == [1, 2]


PLAIN_CONSUMER = textwrap.dedent("""
    import json, sys
    from confluent_kafka import Consumer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    bootstrap, registry, topics, want = sys.argv[1:5]
    topics, want = topics.split(","), int(want)
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry}))
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "downstream",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe(topics)
    seen = []
    while len(seen) < want:
        msg = consumer.poll(30)
        if msg is None:
            break
        if msg.error():
            continue
        value = deserialize(msg.value(), SerializationContext(msg.topic(), MessageField.VALUE))
        seen.append({"topic": msg.topic(), "key": msg.key().decode(), "value": value})
    consumer.close()
    assert not any(name.startswith("agentstream") for name in sys.modules), "imported agentstream"
    print(json.dumps(seen, default=str))
""")


def test_plain_confluent_consumer_decodes_our_events_without_agentstream(
    settings: Settings,
) -> None:
    isolated = settings.model_copy(update={"topic_prefix": f"ds{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    sent = [agent_input(f"agent-{i}", f"question {i}") for i in range(3)]
    with AgentStreamProducer(isolated) as producer:
        for event in sent:
            producer.send(event)

    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PLAIN_CONSUMER,
            isolated.require_bootstrap_servers(),
            isolated.require_schema_registry_url(),
            isolated.topic(INPUTS.name) + "," + isolated.topic(OUTCOMES.name),
            str(len(sent)),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert sorted((s["key"], s["value"]["text"]) for s in seen) == sorted(
        (e.agent_id, e.text) for e in sent
    )
    for s in seen:
        assert s["value"]["envelope"]["agent_id"] == s["key"]
        assert s["value"]["envelope"]["tenant_id"] == "tenant-1"
