"""Producers no one here wrote: plain confluent-kafka clients with their own partitioners and
inputs of any size. Whatever they send, every run that can complete completes, and what cannot
is dead-lettered with its reason; the processor never stops on it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from harness import FakeWorkers, TopicCollector, read_to_end
from world import support_spec

from agentstream.processors.engine.loop import ProcessorEngine
from agentstream.schemas.events import AgentInput, DeadLetter, RunCompleted
from agentstream.schemas.limits import MAX_INPUT_TEXT_BYTES, MAX_RECORD_BYTES
from agentstream.schemas.reasons import DeadLetterReason
from agentstream.streams.producer import AgentStreamProducer, new_input
from agentstream.streams.replay_reader import partition_of
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topics import DLQ, INPUTS, OUTCOMES, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def isolated(settings: Settings) -> Settings:
    isolated = settings.model_copy(update={"topic_prefix": f"op{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    return isolated


def _run_until(
    settings: Settings, collector: TopicCollector, done: Callable[[list[object]], bool]
) -> ProcessorEngine:
    """A processor on ``settings`` until ``done`` holds of what ``collector`` saw (90 s at most),
    with the scripted workers answering."""
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    engine = ProcessorEngine(settings, support_spec(), serde=serde, group_id=f"g-{uuid.uuid4()}")
    deadline = time.monotonic() + 90
    with FakeWorkers(settings):
        engine.run(until=lambda: done(collector.snapshot()) or time.monotonic() > deadline)
    return engine


def _completed(records: list[object]) -> set[str]:
    return {r.envelope.correlation_id for r in records if isinstance(r, RunCompleted)}


#: librdkafka's default (Go, .NET, Node and Python clients), Java's default, Sarama's FNV-1a,
#: and a producer that ignores the key altogether
PARTITIONERS = ("consistent_random", "murmur2_random", "fnv1a_random", "random")


def test_runs_complete_whatever_partitioner_the_producer_kept(isolated: Settings) -> None:
    serde = EventSerde(registry_client(isolated.require_schema_registry_url()))
    topic = isolated.topic(INPUTS.name)
    sent: dict[str, list[AgentInput]] = {}
    for partitioner in PARTITIONERS:
        events = [new_input(f"{partitioner}-{i:02d}", "where is my order?") for i in range(8)]
        producer = Producer({**isolated.kafka_config(), "partitioner": partitioner})
        for event in events:
            producer.produce(topic, serde.encode(topic, event), event.envelope.agent_id.encode())
        assert producer.flush(30) == 0
        sent[partitioner] = events
    everything = [e for events in sent.values() for e in events]
    wanted = {e.envelope.correlation_id for e in everything}
    with TopicCollector(isolated, [OUTCOMES]) as outcomes:
        engine = _run_until(isolated, outcomes, lambda seen: _completed(seen) >= wanted)
        assert _completed(outcomes.snapshot()) == wanted

    home = {
        e.envelope.event_id: partition_of(e.envelope.agent_id, isolated.partitions)
        for e in everything
    }
    copies = [(p, r) for p, r in read_to_end(isolated, [INPUTS]) if isinstance(r, AgentInput)]
    misplaced = {r.envelope.event_id for p, r in copies if p != home[r.envelope.event_id]}
    # Each misplaced input was forwarded once, to its agent's partition; nothing else moved.
    assert engine.stats.forwarded == len(misplaced)
    assert len(copies) == len(everything) + len(misplaced)
    for partitioner, events in sent.items():
        moved = {e.envelope.event_id for e in events} & misplaced
        if partitioner == "murmur2_random":
            assert moved == set()
        else:
            assert moved, f"{partitioner}: every input landed home, which proves nothing"


#: sizes of an input's text: under the limit, over it, near the broker's record limit, over it
KILOBYTES = (100, 600, 900, 5000)


def test_inputs_of_any_size_complete_or_are_refused_and_the_next_ones_complete(
    isolated: Settings,
) -> None:
    serde = EventSerde(registry_client(isolated.require_schema_registry_url()))
    topic = isolated.topic(INPUTS.name)
    producer = Producer(
        {**isolated.kafka_config(), "partitioner": "murmur2_random", "message.max.bytes": 8_000_000}
    )
    big: dict[int, AgentInput] = {}
    refused: dict[int, list[str]] = {kb: [] for kb in KILOBYTES}
    sizes: dict[int, int] = {}
    for kb in KILOBYTES:
        agent, text = f"big-{kb}", "x" * (kb * 1000)
        if len(text) <= MAX_INPUT_TEXT_BYTES:
            big[kb] = new_input(agent, text)
        else:
            # The SDK refuses it, saying why; another client, without that check, sends it.
            with pytest.raises(ValueError, match="limit of an input"):
                new_input(agent, text)
            envelope = new_input(agent, "placeholder").envelope
            big[kb] = AgentInput.model_construct(envelope=envelope, text=text, metadata={})
        value = serde.encode(topic, big[kb])
        sizes[kb] = len(value)
        producer.produce(
            topic,
            value,
            agent.encode(),
            on_delivery=lambda err, _m, kb=kb: err and refused[kb].append(str(err)),
        )
    producer.flush(30)
    after = [new_input(f"big-{kb}", "and a normal question after it") for kb in KILOBYTES]
    with AgentStreamProducer(isolated) as sdk:
        for event in after:
            sdk.send(event)
    fits = {kb for kb in KILOBYTES if kb * 1000 <= MAX_INPUT_TEXT_BYTES}
    wanted = {e.envelope.correlation_id for e in after} | {
        big[kb].envelope.correlation_id for kb in fits
    }
    dead_lettered = {kb for kb in KILOBYTES if kb not in fits and not refused[kb]}

    def letters(seen: list[object]) -> list[DeadLetter]:
        return [r for r in seen if isinstance(r, DeadLetter)]

    def done(seen: list[object]) -> bool:
        return _completed(seen) >= wanted and len(letters(seen)) >= len(dead_lettered)

    with TopicCollector(isolated, [OUTCOMES, DLQ]) as seen:
        engine = _run_until(isolated, seen, done)
        records = seen.snapshot()
    assert _completed(records) >= wanted, "an input did not complete"
    assert engine.stats.recoveries == 0, "a batch failed on them"
    for kb in KILOBYTES:
        if refused[kb]:  # over the broker's record limit: its producer was told
            assert sizes[kb] > MAX_RECORD_BYTES, refused[kb]
    by_agent = {(letter.original_key or b"").decode(): letter for letter in letters(records)}
    assert set(by_agent) == {f"big-{kb}" for kb in dead_lettered}
    for letter in by_agent.values():
        assert letter.error_class == DeadLetterReason.INVALID_EVENT
        assert "limit of an input" in letter.reason
