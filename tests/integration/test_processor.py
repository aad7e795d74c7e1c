"""The processor on the real broker: many agents, crashes, and several instances."""

from __future__ import annotations

import random
import re
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from builders import agent_input
from harness import (
    FakeWorkers,
    ServiceProcess,
    TopicCollector,
    latest_snapshots,
    outcomes_by_agent,
    read_to_end,
)
from world import support_spec

from agentstream.processors.core.machine import fold
from agentstream.processors.core.state import AgentState
from agentstream.processors.engine.loop import PROCESSOR_INPUTS
from agentstream.schemas.events import AgentInput, Event, RunCompleted
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import DLQ, OUTCOMES, STATE, ensure_topics

pytestmark = pytest.mark.integration
PROCESSOR = ["processor", "run", "--spec", "world:support_spec", "--batch-size", "500"]


@pytest.fixture
def isolated(settings: Settings) -> Settings:
    isolated = settings.model_copy(update={"topic_prefix": f"p{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    return isolated


def send_inputs(settings: Settings, agents: int) -> list[AgentInput]:
    texts = ["where is my order", "refund please", "hello"]
    inputs = [agent_input(f"agent-{i:04d}", texts[i % 3]) for i in range(agents)]
    with AgentStreamProducer(settings) as producer:
        futures = [producer.send_async(event) for event in inputs]
        producer.flush()
    assert all(f.done() and f.exception() is None for f in futures)
    return inputs


def distinct_outcomes(records: list[object]) -> int:
    return len(outcomes_by_agent(records))


def check_states_are_folds_of_inputs(settings: Settings, inputs: list[AgentInput]) -> int:
    """Every agent's last snapshot equals the fold of its input events in applied order, no
    input was applied twice, and none was lost. Returns the number of events checked."""
    snapshots = latest_snapshots(read_to_end(settings, [STATE]))
    events: dict[str, Event] = {}
    per_agent: dict[str, set[str]] = defaultdict(set)
    for _, record in read_to_end(settings, list(PROCESSOR_INPUTS)):
        assert isinstance(record, Event)
        events[record.envelope.event_id] = record
        per_agent[record.envelope.agent_id].add(record.envelope.event_id)
    spec = support_spec()
    checked = 0
    for event in inputs:
        agent = event.envelope.agent_id
        state = AgentState.from_json(snapshots[agent].state_json, snapshots[agent].state_format)
        applied = state.recent_event_ids
        assert len(applied) == state.version, "the dedupe window holds the whole history here"
        assert len(set(applied)) == len(applied), f"{agent}: an event was applied twice"
        assert set(applied) == per_agent[agent], f"{agent}: an input was lost or invented"
        assert fold([events[i] for i in applied], spec) == state, f"{agent}: state != fold"
        assert state.run is None and state.runs_completed == 1
        checked += len(applied)
    return checked


def test_a_thousand_agents_each_reach_exactly_one_outcome(
    isolated: Settings, tmp_path: Path
) -> None:
    agents = 1000
    with (
        TopicCollector(isolated, [OUTCOMES]) as outcomes,
        FakeWorkers(isolated),
        ServiceProcess(PROCESSOR, isolated, tmp_path, "processor") as processor,
    ):
        inputs = send_inputs(isolated, agents)
        records = outcomes.wait_for(lambda r: distinct_outcomes(r) >= agents, timeout=180)
        assert processor.terminate() == 0, processor.log_tail()
    found = outcomes_by_agent(records)
    assert len(found) == agents, processor.log_tail()
    assert all(len(o) == 1 for o in found.values()), "one outcome per run"
    assert all(isinstance(o, RunCompleted) for by_id in found.values() for o in by_id.values())
    assert len(records) == agents, "no re-emission without a crash"
    checked = check_states_are_folds_of_inputs(isolated, inputs)
    assert checked >= agents * 4


def test_sigkilled_processor_restarts_and_every_run_has_exactly_one_outcome(
    isolated: Settings, tmp_path: Path
) -> None:
    agents, kills = 1500, 0
    rng = random.Random(7)
    static = [*PROCESSOR, "--instance-id", "processor-1"]
    with (
        TopicCollector(isolated, [OUTCOMES]) as outcomes,
        FakeWorkers(isolated),
        ServiceProcess(static, isolated, tmp_path, "processor") as processor,
    ):
        inputs = send_inputs(isolated, agents)
        while kills < 5 and distinct_outcomes(outcomes.snapshot()) < agents:
            # kill each incarnation once it is processing, at a random moment
            processor.wait_for_log("partitions_restored")
            time.sleep(rng.uniform(0.0, 1.5))
            processor.kill()
            kills += 1
            processor.start()
        records = outcomes.wait_for(lambda r: distinct_outcomes(r) >= agents, timeout=120)
        processor.wait_for_log("processor_started")
        assert processor.terminate() == 0, processor.log_tail()
    found = outcomes_by_agent(records)
    assert len(found) == agents, processor.log_tail()
    assert all(len(o) == 1 for o in found.values()), "exactly one outcome per run, even re-sent"
    checked = check_states_are_folds_of_inputs(isolated, inputs)
    assert read_to_end(isolated, [DLQ]) == [], "a crash must not dead-letter anything"
    resent = sum(int(n) for n in re.findall(r'"outbox_resent": (\d+)', processor.log_tail(10**6)))
    print(
        f"\nprocessor kill test: {kills} SIGKILLs survived, {len(records)} outcome records "
        f"({len(records) - agents} re-sent duplicates), {resent} outbox records re-sent on "
        f"restore, {checked} applied events checked, 0 dead letters"
    )
    assert kills >= 3


def test_a_second_instance_takes_over_when_the_first_is_killed(
    isolated: Settings, tmp_path: Path
) -> None:
    agents = 200
    first = ServiceProcess(PROCESSOR, isolated, tmp_path, "first")
    second = ServiceProcess(PROCESSOR, isolated, tmp_path, "second")
    with TopicCollector(isolated, [OUTCOMES]) as outcomes, FakeWorkers(isolated), first, second:
        half = send_inputs(isolated, agents // 2)
        outcomes.wait_for(lambda r: distinct_outcomes(r) >= agents // 2, timeout=120)
        first.kill()
        rest = [agent_input(f"late-{i:04d}", "refund please") for i in range(agents // 2)]
        with AgentStreamProducer(isolated) as producer:
            for event in rest:
                producer.send_async(event)
        records = outcomes.wait_for(lambda r: distinct_outcomes(r) >= agents, timeout=120)
        assert second.alive()
        assert second.terminate() == 0, second.log_tail()
    assert distinct_outcomes(records) == agents, second.log_tail()
    assert "partitions_restored" in second.log_tail(200)
    check_states_are_folds_of_inputs(isolated, [*half, *rest])


@pytest.mark.parametrize("failpoint", ["after_snapshots", "after_outputs"])
def test_a_crash_in_each_window_of_a_batch_loses_and_duplicates_nothing(
    isolated: Settings, tmp_path: Path, failpoint: str
) -> None:
    agents = 300
    crashing = ServiceProcess(PROCESSOR, isolated, tmp_path, "crashing")
    crashing.extra_env["AGENTSTREAM_FAILPOINT"] = f"{failpoint}:3"
    healthy = ServiceProcess(PROCESSOR, isolated, tmp_path, "healthy")
    with TopicCollector(isolated, [OUTCOMES]) as outcomes, FakeWorkers(isolated):
        inputs = send_inputs(isolated, agents)
        with crashing:
            assert crashing.proc is not None
            assert crashing.proc.wait(120) == 137, crashing.log_tail()
        with healthy:
            records = outcomes.wait_for(lambda r: distinct_outcomes(r) >= agents, timeout=120)
            healthy.wait_for_log("processor_started")
            assert healthy.terminate() == 0, healthy.log_tail()
    found = outcomes_by_agent(records)
    assert len(found) == agents and all(len(o) == 1 for o in found.values())
    check_states_are_folds_of_inputs(isolated, inputs)
    assert read_to_end(isolated, [DLQ]) == []
    resent = re.findall(r'"outbox_resent": (\d+)', healthy.log_tail(10**6))
    if failpoint == "after_snapshots":
        assert sum(map(int, resent)) > 0, "the unmarked outboxes are sent on restore"
