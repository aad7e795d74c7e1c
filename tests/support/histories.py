"""Complete agent histories, as they would appear on the topics, made without a broker.

The pure state machine is driven with the scripted world (``world.respond``): every input, every
request the machine emits, every result the world sends back. Each event comes with the logical
topic it is written to, so tests can produce the history, or apply it straight to PostgreSQL in
any per-topic-order-preserving interleaving.
"""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from builders import T0, envelope
from world import respond, support_spec

from agentstream.processors import testing
from agentstream.processors.core.spec import AgentSpec
from agentstream.processors.core.state import AgentState
from agentstream.schemas.events import AgentInput, Event
from agentstream.streams.topics import topic_for

TEXTS = ("where is my order", "refund please", "hello")


@dataclass(frozen=True)
class Placed:
    """An event and the logical topic and partition it belongs to."""

    event: Event
    topic: str
    partition: int


def make_input(agent_id: str, n: int, text: str, at_s: float = 0.0) -> AgentInput:
    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"history/{agent_id}/{n}"))
    return AgentInput(
        envelope=envelope(agent_id, event_id=event_id, occurred_at=T0 + timedelta(seconds=at_s)),
        text=text,
    )


def drive(
    inputs: list[Event],
    spec: AgentSpec | None = None,
    world: Callable[[Event], Event | None] = respond,
    state: AgentState | None = None,
) -> tuple[list[Event], AgentState | None]:
    """Every event of one agent's history in the order the processor would see and emit them,
    from ``state`` on (a fresh agent by default), with the support agent and the tests' world
    unless told otherwise."""
    return testing.drive(inputs, spec or support_spec(), world, state)


def histories(agents: int, runs_per_agent: int = 1, partitions: int = 6) -> list[Placed]:
    """Histories of ``agents`` agents (every third asks for a gated refund), in one global order
    that keeps each agent's order."""
    placed: list[Placed] = []
    for i in range(agents):
        agent = f"agent-{i:05d}"
        inputs = [
            make_input(agent, n, TEXTS[(i + n) % len(TEXTS)], at_s=60.0 * n)
            for n in range(runs_per_agent)
        ]
        events, _ = drive(inputs)
        partition = i % partitions
        placed += [Placed(e, topic_for(type(e)).name, partition) for e in events]
    return placed


def interleave(placed: list[Placed], seed: int) -> list[Placed]:
    """Another order of the same events that keeps the order within each topic partition: what
    a consumer of several topics may see."""
    rng = random.Random(seed)
    streams: dict[tuple[str, int], deque[Placed]] = {}
    for item in placed:
        streams.setdefault((item.topic, item.partition), deque()).append(item)
    keys = list(streams)
    out: list[Placed] = []
    while keys:
        key = rng.choice(keys)
        out.append(streams[key].popleft())
        if not streams[key]:
            keys.remove(key)
    return out
