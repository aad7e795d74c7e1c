"""The topic registry against the broker, and the producer SDK's errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from builders import agent_input
from confluent_kafka.cimpl import NewTopic

from agentstream.schemas.errors import ConfigurationError, DeliveryError, SerializationError
from agentstream.schemas.events import AgentInput
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import TOPICS, admin_client, describe_topics, ensure_topics

pytestmark = pytest.mark.integration


def _prefixed(settings: Settings) -> Settings:
    return settings.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:6]}."})


def test_ensure_creates_every_topic_once_with_the_same_partitions(settings: Settings) -> None:
    isolated = _prefixed(settings)
    assert {s.action for s in describe_topics(isolated)} == {"missing"}
    created = ensure_topics(isolated)
    assert [s.physical_name for s in created] == [isolated.topic(t.name) for t in TOPICS]
    assert {s.action for s in created} == {"created"}
    assert {s.partitions for s in created} == {isolated.partitions}
    again = ensure_topics(isolated)
    assert {s.action for s in again} == {"exists"}


def test_ensure_refuses_topics_that_are_not_co_partitioned(settings: Settings) -> None:
    isolated = _prefixed(settings)
    admin = admin_client(isolated)
    odd = isolated.topic("agent.tool-results")
    admin.create_topics([NewTopic(odd, num_partitions=2, replication_factor=1)])[odd].result(15)
    with pytest.raises(ConfigurationError, match="not co-partitioned"):
        ensure_topics(isolated)


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("agentstream", path=str(Path(sys.executable).parent))
    assert exe
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env.update(
        {
            "AGENTSTREAM_BOOTSTRAP_SERVERS": settings.require_bootstrap_servers(),
            "AGENTSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "COLUMNS": "200",
            "AGENTSTREAM_HOME": "/nonexistent-agentstream-home",
        }
    )
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)


def test_topics_commands(settings: Settings) -> None:
    isolated = _prefixed(settings)
    missing = _cli(isolated, "topics", "describe")
    assert missing.returncode == 1
    assert "agentstream topics ensure" in missing.stderr
    ensured = _cli(isolated, "topics", "ensure")
    assert ensured.returncode == 0, ensured.stderr
    assert ensured.stdout.count("created") == len(TOPICS)
    described = _cli(isolated, "topics", "describe")
    assert described.returncode == 0
    assert isolated.topic("agent.state") in described.stdout
    assert "compact" in described.stdout


def test_send_returns_the_acknowledged_position(settings: Settings) -> None:
    isolated = _prefixed(settings)
    ensure_topics(isolated)
    with AgentStreamProducer(isolated) as producer:
        first = producer.send(agent_input("agent-a"))
        second = producer.send(agent_input("agent-a"))
    assert first.topic == isolated.topic("agent.inputs")
    assert (second.partition, second.offset) == (first.partition, first.offset + 1)


def test_invalid_and_oversized_events_are_refused_before_sending(settings: Settings) -> None:
    isolated = _prefixed(settings)
    with AgentStreamProducer(isolated) as producer:
        valid = agent_input()
        sneaky = AgentInput.model_construct(
            envelope=valid.envelope.model_copy(update={"agent_id": "spaces are not ids"}),
            text="x",
            metadata={},
        )
        with pytest.raises(SerializationError, match="invalid AgentInput"):
            producer.send(sneaky)
        with pytest.raises(SerializationError, match="byte limit"):
            producer.send(valid.model_copy(update={"text": "x" * 1_100_000}))


def test_unreachable_broker_is_a_typed_delivery_error(settings: Settings) -> None:
    dead = settings.model_copy(update={"bootstrap_servers": "127.0.0.1:9"})
    producer = AgentStreamProducer(dead, extra_config={"message.timeout.ms": 1500})
    try:
        with pytest.raises(DeliveryError):
            producer.send(agent_input(), timeout=10)
    finally:
        producer.close(timeout=5)
