"""The benchmark's workload: realistic agent events, produced to fresh topics.

Every event carries the full envelope and a 200-1,000 byte payload (an input's text, a tool's
JSON result, a model's answer). Histories come from the real state machine driven by a scripted
world, so the projector and the rebuild see exactly what a live system writes.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import Producer

from agentstream.processors.core.spec import AgentSpec
from agentstream.processors.examples import support_agent
from agentstream.processors.testing import ModelReply, ScriptedWorld, drive
from agentstream.schemas.errors import AgentStreamError, DeliveryError
from agentstream.schemas.events import (
    AgentInput,
    Envelope,
    Event,
    ModelCallRequested,
    TokenUsage,
    ToolCallIntent,
    ToolCallRequested,
)
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde
from agentstream.streams.topics import ensure_topics, topic_for

#: The agent every stage runs: the sample support agent (scripted model, instant tools).
SPEC: AgentSpec = support_agent
T0 = datetime(2026, 1, 1, tzinfo=UTC)
_NS = uuid.UUID("6f2d8a52-3c1b-4b8e-9d7a-2e5b0c9f4a11")
_WORDS = (
    "order",
    "parcel",
    "delivery",
    "invoice",
    "address",
    "tracking",
    "carrier",
    "status",
    "please",
    "yesterday",
    "broken",
    "arrived",
    "customer",
    "support",
)

Progress = Callable[[int], None]


class BenchmarkError(AgentStreamError):
    """A stage of the benchmark did not finish."""

    hint = "run with --verbose for the logs; --quick or a smaller --events needs less time"


def text_of(rng: random.Random, low: int = 200, high: int = 1000) -> str:
    """A message of ``low`` to ``high`` bytes (ASCII, so characters are bytes)."""
    size = rng.randint(low, high)
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def fresh(settings: Settings, tag: str) -> Settings:
    """Settings with a topic prefix of their own, topics created: stages never share data."""
    prefixed = settings.model_copy(
        update={"topic_prefix": f"{settings.topic_prefix}bench-{tag}-{uuid.uuid4().hex[:6]}."}
    )
    ensure_topics(prefixed)
    return prefixed


def agent_input(agent_id: str, text: str, at: datetime = T0, n: int = 0) -> AgentInput:
    event_id = str(uuid.uuid5(_NS, f"input/{agent_id}/{n}/{at.timestamp()}"))
    return AgentInput(
        envelope=Envelope(
            event_id=event_id,
            agent_id=agent_id,
            tenant_id="bench",
            correlation_id=event_id,
            occurred_at=at,
            source="bench",
        ),
        text=text,
        metadata={"channel": "email", "locale": "en"},
    )


def inputs(count: int, seed: int = 7, prefix: str = "agent") -> Iterator[AgentInput]:
    """``count`` inputs, one per agent: each one starts a run (a model call request)."""
    rng = random.Random(seed)
    for i in range(count):
        yield agent_input(f"{prefix}-{i:07d}", text_of(rng))


def order_question(agent_id: str, rng: random.Random, at: datetime, n: int = 0) -> AgentInput:
    """A question the scripted support model answers in 3 steps: model, lookup_order, model."""
    return agent_input(agent_id, f"Where is my order o-1001? {text_of(rng, 180, 900)}", at, n)


def world(rng: random.Random) -> ScriptedWorld:
    """The scripted world: step 1 looks the order up, step 2 answers; tools answer at once;
    nobody approves (the bench's agent asks for no approval)."""

    def model(request: ModelCallRequested) -> ModelReply:
        if request.step != 1:
            return text_of(rng, 200, 600), []
        order = f"o-{1001 + rng.randrange(3)}"
        arguments = json.dumps({"order_id": order})
        return None, [
            ToolCallIntent(tool_call_id="tc-1", tool="lookup_order", arguments_json=arguments)
        ]

    def tool(_request: ToolCallRequested) -> str:
        notes = text_of(rng)
        return json.dumps(
            {"order_id": "o-1001", "found": True, "status": "shipped", "notes": notes}
        )

    return ScriptedWorld(
        namespace=_NS,
        model=model,
        tool=tool,
        source="bench-world",
        delay_ms=40,
        usage=TokenUsage(prompt_tokens=120, completion_tokens=40),
        model_latency_ms=35,
        tool_latency_ms=2,
        approver=None,
    )


def history(agent_id: str, rng: random.Random) -> list[Event]:
    """One complete 3-step run of one agent, in the order the processor sees and emits it."""
    events, _state = drive([agent_input(agent_id, text_of(rng))], SPEC, world(rng))
    return events


def histories(events: int, seed: int = 11) -> Iterator[Event]:
    """Complete histories (8 events each) until at least ``events`` events."""
    rng = random.Random(seed)
    made = 0
    agent = 0
    while made < events:
        for event in history(f"agent-{agent:07d}", rng):
            made += 1
            yield event
        agent += 1


@dataclass
class Produced:
    records: int
    bytes: int
    seconds: float


def producer(settings: Settings, **extra: object) -> Producer:
    return Producer(
        {
            **settings.kafka_config(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 1_000_000,
            **extra,
        }
    )


def produce_raw(
    producer_: Producer,
    records: Iterable[tuple[str, bytes, bytes]],
    on_progress: Progress | None = None,
) -> Produced:
    """Produce (topic, key, value) records as fast as the client takes them; wait for every
    acknowledgement."""
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    began = time.perf_counter()
    count = size = 0
    for topic, key, value in records:
        while True:
            try:
                producer_.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:
                producer_.poll(0.01)
        count += 1
        size += len(value)
        if count % 5000 == 0:
            producer_.poll(0)
            if on_progress is not None:
                on_progress(5000)
    remaining = producer_.flush(120)
    seconds = time.perf_counter() - began
    if remaining or errors:
        raise DeliveryError(f"{remaining} records unacknowledged, errors: {errors[:3]}")
    if on_progress is not None:
        on_progress(count % 5000)
    return Produced(count, size, seconds)


def encoded(
    settings: Settings, serde: EventSerde, events: Iterable[Event]
) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, framed Avro) for each event, on the topic its type belongs to."""
    topics: dict[type[Event], str] = {}
    for event in events:
        topic = topics.get(type(event))
        if topic is None:
            topic = topics[type(event)] = settings.topic(topic_for(type(event)).name)
        yield topic, event.envelope.agent_id.encode(), serde.encode(topic, event)
