"""Agents of several kinds working together on the real services: a lead delegates to two
children in parallel and the processor is SIGKILLed between the children's answers; inputs
for a kind not served, or for another kind than the agent's, are dead-lettered."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import pytest
from harness import ServiceProcess, TopicCollector, latest_snapshots, read_to_end
from team_world import LEAD, RESEARCHER, REVIEWER

from agentstream.processors.control.approvals import decide
from agentstream.processors.core.machine import agent_id_of, run_id_of
from agentstream.processors.core.state import AgentState
from agentstream.schemas.events import (
    AgentInput,
    ApprovalRequested,
    DeadLetter,
    DelegationReturned,
    Event,
    ModelCallRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunHandedOff,
)
from agentstream.schemas.reasons import DeadLetterReason
from agentstream.streams.producer import AgentStreamProducer, new_envelope
from agentstream.streams.runtime import tracing
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topic_scan import scan_topics
from agentstream.streams.topics import (
    APPROVAL_DECISIONS,
    APPROVAL_REQUESTS,
    DLQ,
    INPUTS,
    MODEL_CALLS,
    MODEL_RESULTS,
    OUTCOMES,
    STATE,
    TIMERS,
    TOOL_CALLS,
    TOOL_RESULTS,
    ensure_topics,
)

pytestmark = pytest.mark.integration

SPECS = [f"--spec=team_world:{kind}" for kind in (LEAD, RESEARCHER, REVIEWER)]
WATCHED = [INPUTS, MODEL_CALLS, TOOL_RESULTS, APPROVAL_REQUESTS, OUTCOMES, DLQ]
#: every topic a record of a run can be on
RUN_TOPICS = [
    INPUTS,
    MODEL_CALLS,
    MODEL_RESULTS,
    TOOL_CALLS,
    TOOL_RESULTS,
    APPROVAL_REQUESTS,
    APPROVAL_DECISIONS,
    OUTCOMES,
    TIMERS,
]
OUTCOME_TYPES = (RunCompleted, RunFailed, RunCancelled, RunHandedOff)
E = TypeVar("E", bound=Event)


@dataclass
class Team:
    """One processor for the module's tests (the first SIGKILLs it), the tool and model
    workers, and a reader of what the agents do."""

    settings: Settings
    processor: ServiceProcess
    seen: TopicCollector

    def send(self, *events: Event) -> None:
        with AgentStreamProducer(self.settings) as producer:
            for event in events:
                producer.send(event)

    def first(self, kind: type[E], timeout: float = 60, **fields: object) -> E:
        found = self.seen.wait_for_kind(kind, timeout, **fields).record
        assert isinstance(found, kind)
        return found

    def outcome(self, run_id: str, timeout: float = 60) -> Event:
        def ended(records: list[object]) -> bool:
            return any(_ends(r, run_id) for r in records)

        found = [r for r in self.seen.wait_for(ended, timeout) if _ends(r, run_id)]
        assert found and isinstance(found[0], Event), f"run {run_id} did not end in {timeout}s"
        return found[0]

    def all_of(self, kind: type[E], **fields: object) -> list[E]:
        return [s.record for s in self.seen.of_kind(kind, **fields) if isinstance(s.record, kind)]


@pytest.fixture(scope="module")
def team(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    prefix = f"dg{uuid.uuid4().hex[:6]}."
    isolated = settings.model_copy(update={"topic_prefix": prefix})
    ensure_topics(isolated)
    logs = tmp_path_factory.mktemp("delegation")

    def service(name: str, *args: str) -> ServiceProcess:
        return ServiceProcess([*args, "--group", f"{prefix}{name}"], isolated, logs, name)

    # static membership: the restart after the kill takes its partitions back at once
    processor = service("processor", "processor", "run", *SPECS, "--instance-id", "team-1")
    tools = service("tools", "worker", "tools", "run", *SPECS)
    models = service("models", "worker", "models", "run", *SPECS)
    with TopicCollector(isolated, WATCHED) as seen, processor, tools, models:
        processor.wait_for_log("partitions_restored")
        for worker in (tools, models):
            worker.wait_for_log("worker_started")
        yield Team(isolated, processor, seen)
        # side by side: each takes seconds to leave its group
        with ThreadPoolExecutor(3) as pool:
            codes = list(pool.map(ServiceProcess.terminate, (processor, tools, models)))
        assert codes == [0, 0, 0], "\n".join(p.log_tail() for p in (processor, tools, models))


def _ends(record: object, run_id: str) -> bool:
    return isinstance(record, OUTCOME_TYPES) and record.envelope.run_id == run_id


def ask(agent: str, text: str, kind: str | None) -> AgentInput:
    return AgentInput(envelope=new_envelope(agent, source="delegation-test"), text=text, kind=kind)


def state_of(settings: Settings, agent: str, until: Callable[[AgentState], bool]) -> AgentState:
    """The agent's latest snapshot, once it satisfies ``until``."""
    for _ in range(300):
        snapshot = latest_snapshots(read_to_end(settings, [STATE])).get(agent)
        if snapshot is not None:
            state = AgentState.from_json(snapshot.state_json, snapshot.state_format)
            if until(state):
                return state
        time.sleep(0.2)
    raise AssertionError(f"{agent}: no snapshot as expected")


def distinct(events: list[E]) -> dict[str, E]:
    """By event id: a copy sent again (a restored outbox, a worker's retry) is the same event."""
    return {e.event_id: e for e in events}


def test_a_parent_gets_both_parallel_answers_once_across_a_processor_kill(team: Team) -> None:
    lead = "lead-1"
    researcher, reviewer = agent_id_of(lead, RESEARCHER), agent_id_of(lead, REVIEWER)
    question = ask(lead, "plan launch", LEAD)
    team.send(question)
    answered = team.first(RunCompleted, agent_id=researcher)
    returned = team.first(DelegationReturned, agent_id=lead, child_agent_id=researcher)
    gate = team.first(ApprovalRequested, agent_id=reviewer)
    waiting = state_of(team.settings, lead, lambda s: returned.event_id in s.recent_event_ids)
    team.processor.kill()
    team.processor.start()
    team.processor.wait_for_log("partitions_restored")
    decision = decide(gate, approve=True, approver="delegation-test")
    team.send(decision)
    done = team.first(RunCompleted, agent_id=lead)

    # the kill hit between the children's answers: the lead held the researcher's, and waited
    # for the reviewer's
    assert waiting.run is not None and waiting.status == "delegating"
    assert [(p.tool, p.child_agent_id) for p in waiting.run.pending_tools] == [
        ("ask_reviewer", reviewer)
    ]
    calls = {
        c.origin.reply_call_id: c
        for c in distinct(team.all_of(AgentInput)).values()
        if c.origin is not None and c.origin.agent_id == lead
    }
    assert sorted(c.agent_id for c in calls.values()) == [researcher, reviewer]
    _assert_one_answer_per_call(team, lead, calls)
    reviewed = team.first(RunCompleted, agent_id=reviewer)
    _assert_model_saw_each_answer_once(team, lead, [answered.output, reviewed.output])
    runs = {run_id_of(question.event_id), *(run_id_of(c.event_id) for c in calls.values())}
    _assert_one_outcome_per_run(team, {lead, researcher, reviewer}, runs)
    assert done.output.count(answered.output) == done.output.count(reviewed.output) == 1
    for child in (answered, reviewed):
        assert child.envelope.correlation_id == question.event_id
    _assert_one_trace(team.settings, question.event_id, {question.event_id, decision.event_id})
    assert [d for d in team.all_of(DeadLetter) if d.agent_id in (lead, researcher, reviewer)] == []


def _assert_one_answer_per_call(team: Team, lead: str, calls: dict[str | None, AgentInput]) -> None:
    answers: dict[str, set[str]] = defaultdict(set)
    for returned in team.all_of(DelegationReturned, agent_id=lead):
        answers[returned.call_id].add(returned.event_id)
    assert {call: len(ids) for call, ids in answers.items()} == dict.fromkeys(calls, 1)


def _assert_model_saw_each_answer_once(team: Team, lead: str, outputs: list[str]) -> None:
    [second] = distinct(team.all_of(ModelCallRequested, agent_id=lead, step=2)).values()
    results = [m for m in json.loads(second.messages_json) if m["role"] == "tool"]
    assert sorted(m["content"] for m in results) == sorted(outputs)
    assert sorted(m["name"] for m in results) == ["ask_researcher", "ask_reviewer"]
    for output in outputs:
        assert second.messages_json.count(json.dumps(output)[1:-1]) == 1


def _assert_one_outcome_per_run(team: Team, agents: set[str], runs: set[str]) -> None:
    outcomes: dict[str | None, set[str]] = defaultdict(set)
    kinds: set[str] = set()
    for record in team.seen.snapshot():
        if isinstance(record, OUTCOME_TYPES) and record.agent_id in agents:
            outcomes[record.envelope.run_id].add(record.event_id)
            kinds.add(type(record).__name__)
    assert {run: len(ids) for run, ids in outcomes.items()} == dict.fromkeys(runs, 1)
    assert kinds == {"RunCompleted"}


def _assert_one_trace(settings: Settings, correlation_id: str, sent_here: set[str]) -> None:
    """Every record of the conversation, the children's too, carries the run's trace (copies
    of a record re-sent after the kill may carry none: a reader takes the run's then)."""
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    traced: dict[str, set[str | None]] = defaultdict(set)
    agents: set[str] = set()
    for scanned in scan_topics(settings, serde, RUN_TOPICS):
        record = scanned.record
        if isinstance(record, Event) and record.envelope.correlation_id == correlation_id:
            header = tracing.traceparent_of(scanned.headers)
            traced[record.event_id].add(tracing.trace_id_of(header))
            agents.add(record.agent_id)
    untraced = {event for event, ids in traced.items() if ids == {None}}
    trace_ids = {i for ids in traced.values() for i in ids} - {None}
    assert untraced == sent_here
    assert trace_ids == {tracing.trace_id_of(tracing.derived_traceparent(correlation_id))}
    assert len(agents) == 3, agents


def test_inputs_for_a_kind_not_served_or_another_kind_are_dead_lettered(team: Team) -> None:
    binding = ask("bound-1", "research gadgets", RESEARCHER)
    mismatch = ask("bound-1", "plan gadgets", LEAD)
    unknown = ask("stray-1", "plan gadgets", "astrologer")
    # sent after the refused ones: the first keeps the kind it was bound to, the second binds
    # the agent the refused input left unbound
    later = [ask("bound-1", "research widgets", None), ask("stray-1", "research tools", RESEARCHER)]
    team.send(binding, mismatch, unknown, *later)
    ended = [team.outcome(run_id_of(e.event_id)) for e in (binding, *later)]
    wrong_kind = team.first(DeadLetter, event_id=mismatch.event_id)
    not_served = team.first(DeadLetter, event_id=unknown.event_id)

    assert [o.output if isinstance(o, RunCompleted) else o for o in ended] == [
        "researched gadgets: 3 sources",
        "researched widgets: 3 sources",
        "researched tools: 3 sources",
    ]
    assert (wrong_kind.error_class, wrong_kind.agent_id) == (
        DeadLetterReason.KIND_MISMATCH,
        "bound-1",
    )
    assert "is of kind 'researcher'" in wrong_kind.reason
    assert "cannot make it a 'lead'" in wrong_kind.reason
    assert (not_served.error_class, not_served.agent_id) == (
        DeadLetterReason.UNKNOWN_KIND,
        "stray-1",
    )
    assert "kind 'astrologer'" in not_served.reason
    assert "lead, researcher, reviewer" in not_served.reason
    letters = {d.event_id for d in team.all_of(DeadLetter) if d.agent_id in ("bound-1", "stray-1")}
    assert letters == {mismatch.event_id, unknown.event_id}
    # nothing of the refused inputs ran
    refused_runs = {run_id_of(mismatch.event_id), run_id_of(unknown.event_id)}
    ran = [
        r
        for r in team.seen.snapshot()
        if isinstance(r, (*OUTCOME_TYPES, ModelCallRequested)) and r.envelope.run_id in refused_runs
    ]
    assert ran == []
