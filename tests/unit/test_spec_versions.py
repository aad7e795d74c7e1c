"""Pinned spec versions: a run finishes on the version it started on, new runs start on the
newest, and a run whose version is gone fails with a reason that names both."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from builders import T0, agent_input, input_at
from world import Agent, agent_spec, model_answer, tool_result

from agentstream.processors.core.machine import Decision
from agentstream.processors.core.spec import Memory, SpecVersions
from agentstream.processors.core.state import evolve
from agentstream.schemas.errors import ConfigurationError
from agentstream.schemas.events import (
    Event,
    ModelCallRequested,
    RunCompleted,
    RunFailed,
    ToolCallRequested,
)
from agentstream.schemas.reasons import RunFailure

V1 = agent_spec(version=1, system_prompt="Be helpful.")
V2 = agent_spec(version=2, system_prompt="Be brief.")
BOTH = SpecVersions((V1, V2))


def _emitted(decision: Decision, kind: type[Event]) -> list[Event]:
    return [e for e in decision.emits if isinstance(e, kind)]


def _model_call(decision: Decision) -> ModelCallRequested:
    (request,) = _emitted(decision, ModelCallRequested)
    assert isinstance(request, ModelCallRequested)
    return request


def _tool_call(decision: Decision) -> ToolCallRequested:
    (request,) = _emitted(decision, ToolCallRequested)
    assert isinstance(request, ToolCallRequested)
    return request


def test_versions_of_one_agent_each_once_newest_last() -> None:
    versions = SpecVersions((V2, V1))
    assert versions.newest is V2 and versions.versions == (V1, V2)
    assert versions.version(1) is V1 and versions.version(3) is None
    assert SpecVersions.of(V1).versions == (V1,) and SpecVersions.of([V2, V1]) == versions
    assert SpecVersions.of(versions) is versions
    with pytest.raises(ConfigurationError, match="different agents"):
        SpecVersions((V1, replace(V2, name="billing")))
    with pytest.raises(ConfigurationError, match="given twice"):
        SpecVersions((V1, agent_spec(version=1, system_prompt="other")))
    with pytest.raises(ConfigurationError, match="no agent spec"):
        SpecVersions(())
    with pytest.raises(ConfigurationError, match="version must be 1 or more"):
        agent_spec(version=0)


def test_the_content_hash_follows_behaviour_not_the_version_number() -> None:
    assert agent_spec(version=7).content_hash == V1.content_hash
    assert V2.content_hash != V1.content_hash
    assert agent_spec(memory=Memory(turns=1)).content_hash != V1.content_hash
    assert agent_spec(max_steps=3).content_hash != V1.content_hash


def _started_on_v1() -> tuple[Agent, ModelCallRequested]:
    """A run started while only v1 was served, now served next to v2."""
    agent = Agent(V1)
    request = _model_call(agent.send(agent_input(text="where is it")))
    assert (request.spec_version, request.system_prompt) == (1, "Be helpful.")
    agent.spec = BOTH
    return agent, request


def test_a_run_finishes_on_its_version_and_the_next_input_starts_on_the_newest() -> None:
    agent, request = _started_on_v1()
    assert agent.send(input_at(T0 + timedelta(seconds=1), "next")).emits == ()  # queued
    lookup = _tool_call(agent.send(model_answer(request)))
    second = _model_call(agent.send(tool_result(lookup)))
    assert (second.system_prompt, second.spec_version, second.spec_hash) == (
        "Be helpful.",
        1,
        V1.content_hash,
    )
    finished = agent.send(model_answer(second))
    (completed,) = _emitted(finished, RunCompleted)
    assert isinstance(completed, RunCompleted)
    assert (completed.spec_version, completed.spec_hash) == (1, V1.content_hash)
    following = _model_call(finished)
    assert following.envelope.run_id != completed.envelope.run_id
    assert (following.system_prompt, following.spec_version, following.spec_hash) == (
        "Be brief.",
        2,
        V2.content_hash,
    )


def test_a_run_whose_version_is_no_longer_served_fails() -> None:
    agent, request = _started_on_v1()
    agent.spec = V2
    (failed,) = _emitted(agent.send(model_answer(request)), RunFailed)
    assert isinstance(failed, RunFailed)
    assert failed.error_class == RunFailure.SPEC_VERSION_UNAVAILABLE
    assert f"v1 ({V1.content_hash})" in failed.reason and "not served" in failed.reason
    assert V2.label in failed.reason
    assert agent.state is not None and agent.state.run is None


def test_a_run_whose_version_changed_since_it_started_fails() -> None:
    agent, request = _started_on_v1()
    changed = agent_spec(version=1, system_prompt="Be rude.")
    agent.spec = SpecVersions((changed, V2))
    (failed,) = _emitted(agent.send(model_answer(request)), RunFailed)
    assert isinstance(failed, RunFailed)
    assert failed.error_class == RunFailure.SPEC_VERSION_UNAVAILABLE
    assert f"{V1.content_hash} -> {changed.content_hash}" in failed.reason


def test_a_run_started_before_pinning_continues_on_the_newest() -> None:
    agent, request = _started_on_v1()
    assert agent.state is not None and agent.state.run is not None
    unpinned = evolve(agent.state.run, spec_version=None, spec_hash=None)  # as upcast
    agent.state = evolve(agent.state, run=unpinned)
    lookup = _tool_call(agent.send(model_answer(request)))
    second = _model_call(agent.send(tool_result(lookup)))
    assert (second.system_prompt, second.spec_version, second.spec_hash) == (
        "Be brief.",
        None,
        None,
    )


def test_one_spec_is_served_as_its_only_version() -> None:
    request = _model_call(Agent(V2).send(agent_input()))
    assert (request.spec_version, request.spec_hash) == (2, V2.content_hash)
