"""Recovering the order in which the processor applied an agent's inputs, from its outputs alone."""

from __future__ import annotations

import pytest
from golden_scenarios import DRIVABLE, SCENARIOS
from histories import drive, make_input
from world import support_spec

from agentstream.processors.core.machine import transition
from agentstream.processors.core.spec import AgentSpec
from agentstream.processors.core.state import AgentState
from agentstream.processors.engine.loop import PROCESSOR_INPUTS
from agentstream.processors.replay.order import Queued, processor_order
from agentstream.schemas.events import Event
from agentstream.streams.topics import topic_for

_INPUT_TOPICS = [spec.name for spec in PROCESSOR_INPUTS]


def split(history: list[Event]) -> tuple[list[list[Queued]], dict[str, frozenset[str]]]:
    """What the audit log holds: the input streams (in topic order) and outputs by cause."""
    streams: dict[str, list[Queued]] = {name: [] for name in _INPUT_TOPICS}
    caused: dict[str, set[str]] = {}
    for event in history:
        topic = topic_for(type(event)).name
        if topic in streams:
            rank = _INPUT_TOPICS.index(topic)
            streams[topic].append(Queued(event.envelope.occurred_at, rank, event))
        else:
            cause = event.envelope.causation_id or ""
            caused.setdefault(cause, set()).add(event.envelope.event_id)
    return list(streams.values()), {k: frozenset(v) for k, v in caused.items()}


def replay(history: list[Event], spec: AgentSpec | None = None) -> None:
    """The recovered order makes the state machine emit exactly the recorded outputs."""
    spec = spec or support_spec()
    streams, caused = split(history)
    state: AgentState | None = None
    emitted: set[str] = set()
    for event in processor_order(streams, caused, spec):
        decision = transition(state, event, spec)
        state = decision.state
        emitted |= {e.envelope.event_id for e in decision.emits}
    assert emitted == set().union(*caused.values())


def test_an_input_queued_behind_a_run_and_one_that_arrived_later_are_told_apart() -> None:
    first = make_input("agent-q", 0, "where is my order")
    second = make_input("agent-q", 1, "and another thing", at_s=0.001)
    queued, _ = drive([first, second])
    one, state = drive([first])
    later, _ = drive([second], state=state)
    assert queued != [*one, *later], "the two histories differ in their call ids"
    replay(queued)
    replay([*one, *later])


@pytest.mark.parametrize("name", sorted(DRIVABLE))
def test_golden_scenarios(name: str) -> None:
    spec, inputs, world = SCENARIOS[name]
    history, _ = drive(list(inputs), spec, world)
    replay(history, spec)


def test_parallel_tool_results_in_either_order() -> None:
    history, _ = drive([make_input("agent-p", 0, "refund please")])
    replay(history)
    results = [e for e in history if topic_for(type(e)).name == "agent.tool-results"]
    assert len(results) == 2
