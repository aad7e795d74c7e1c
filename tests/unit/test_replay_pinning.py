"""`replay agent` replays each run on the spec version it recorded, unless told otherwise."""

from __future__ import annotations

import dataclasses

from builders import agent_input
from world import respond, support_spec

from agentstream.processors.core.machine import SOURCE
from agentstream.processors.core.spec import AgentSpec, SpecVersions
from agentstream.processors.replay.agent import replay_agent
from agentstream.processors.replay.history import AgentHistory, Recorded
from agentstream.processors.testing import drive
from agentstream.streams.topics import topic_for

V1 = dataclasses.replace(support_spec(), version=1, system_prompt="v1 prompt")
V2 = dataclasses.replace(support_spec(), version=2, system_prompt="v2 prompt")


def recorded_on(spec: AgentSpec) -> AgentHistory:
    """One agent's history as the processor would have recorded it serving ``spec``."""
    events, _ = drive([agent_input("a", "refund please")], spec, respond)
    history = AgentHistory("a", 0)
    for offset, event in enumerate(events):
        item = Recorded(event, topic_for(type(event)).name, 0, offset)
        emitted = event.envelope.source == SOURCE
        (history.outputs if emitted else history.inputs).append(item)
    return history


def test_a_run_recorded_on_v1_replays_identically_when_v1_and_v2_are_given() -> None:
    replay = replay_agent(recorded_on(V1), SpecVersions((V1, V2)))
    assert replay.identical, [s.outputs for s in replay.differing()]
    assert replay.state is not None and replay.state.runs_completed == 1


def test_given_only_v2_the_replay_is_a_what_if_and_shows_every_changed_request() -> None:
    replay = replay_agent(recorded_on(V1), V2)
    changes = {c.path for s in replay.steps for o in s.outputs for c in o.changes}
    assert not replay.identical
    assert {"system_prompt", "spec_version", "spec_hash"} <= changes
