"""The projector's pure row mapping, with no I/O: audit rows, NUL handling, and deltas whose
merge makes the tables independent of batch boundaries and of how topics interleave."""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import astuple
from datetime import timedelta
from typing import Any

import pytest
from builders import T0, envelope
from eventgen import records
from histories import Placed, drive, histories, interleave, make_input
from hypothesis import given, settings
from hypothesis import strategies as st
from projection_support import ControlWorld, TeamWorld
from world import respond, result_envelope

from agentstream.processors.core.machine import run_id_of
from agentstream.projections.audit import SourcedEvent, event_from_payload
from agentstream.projections.inspect import TreeRun, outcome_summary, topic_trees, tree_order
from agentstream.projections.rows import (
    AgentDelta,
    ApprovalDelta,
    BatchDeltas,
    RunDelta,
    RunStatus,
    ToolCallDelta,
    tool_call_status,
)
from agentstream.projections.sanitize import REPLACEMENT, jsonb_text, sanitize
from agentstream.schemas.events import (
    EVENT_TYPES,
    AgentInput,
    AgentPaused,
    AgentResumed,
    ApprovalDenied,
    ApprovalRequested,
    Event,
    MemoryErased,
    MemoryRecorded,
    RunCompleted,
    RunFailed,
    RunHandedOff,
    RunOutcome,
    TimerSet,
    TokenUsage,
    ToolCallCompleted,
    ToolCallFailed,
    ToolCallRequested,
)

Delta = AgentDelta | RunDelta | ToolCallDelta | ApprovalDelta


def table_rows(deltas: BatchDeltas) -> dict[str, dict[str, tuple[Any, ...]]]:
    return {
        "agents": {k: v.row() for k, v in deltas.agents.items()},
        "runs": {k: v.row() for k, v in deltas.runs.items()},
        "tool_calls": {k: v.row() for k, v in deltas.tool_calls.items()},
        "approvals": {k: v.row() for k, v in deltas.approvals.items()},
        "waits": {k: v.row() for k, v in deltas.waits.items()},
        "timers": {k: v.row() for k, v in deltas.timers.items()},
        "run_inputs": {k: v.row() for k, v in deltas.inputs.items()},
    }


def merged(first: BatchDeltas, later: BatchDeltas) -> BatchDeltas:
    """What the SQL upserts do with a stored row and a batch's delta, table by table."""
    # an input's row is one event: the first of a run id stays
    out = BatchDeltas(inputs={**later.inputs, **first.inputs})
    pairs: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
        (first.agents, later.agents, out.agents),
        (first.runs, later.runs, out.runs),
        (first.tool_calls, later.tool_calls, out.tool_calls),
        (first.approvals, later.approvals, out.approvals),
        (first.waits, later.waits, out.waits),
        (first.timers, later.timers, out.timers),
    ]
    for a, b, target in pairs:
        for key in a.keys() | b.keys():
            if key in a and key in b:
                target[key] = a[key].merge(b[key])
            else:
                target[key] = a.get(key) or b[key]
    return out


def split_fold(events: list[Event], cuts: list[int]) -> BatchDeltas:
    bounds = [0, *sorted(cuts), len(events)]
    total = BatchDeltas()
    for start, end in itertools.pairwise(bounds):
        total = merged(total, BatchDeltas.collect(events[start:end]))
    return total


def mixed_histories() -> list[Placed]:
    """Lookups, approved refunds, a denied refund, a failing tool, queued inputs, and runs
    delegated and handed off across agents."""
    placed = histories(12, runs_per_agent=2)

    def deny_and_break(request: Event) -> Event | None:
        if isinstance(request, ApprovalRequested):
            return ApprovalDenied(
                envelope=result_envelope(request, "deny", source="cli"),
                call_id=request.call_id,
                arguments_hash=request.arguments_hash,
                approver="bob",
                comment="no receipt",
            )
        if isinstance(request, ToolCallRequested):
            return ToolCallFailed(
                envelope=result_envelope(request, "fail"),
                call_id=request.call_id,
                tool=request.tool,
                attempts=3,
                error_class="ConnectionError",
                error_message="orders service unreachable",
            )
        return respond(request)

    events, _ = drive([make_input("odd-agent", 0, "refund please")], world=deny_and_break)
    # cancelled, paused, waiting and called-back agents, facts and an erasure
    steered = ControlWorld.make("rows")
    return (
        placed
        + [Placed(e, "x", 0) for e in events]
        + steered.placed(steered.before + steered.erase, partitions=2)
        + TeamWorld.make("rows").placed(partitions=3)
    )


# -- deltas ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=6), st.integers(0, 10**6))
def test_batch_boundaries_do_not_change_the_rows(cut_points: list[int], seed: int) -> None:
    placed = interleave(mixed_histories(), seed)
    events = [p.event for p in placed]
    cuts = [c % (len(events) + 1) for c in cut_points]
    whole = table_rows(BatchDeltas.collect(events))
    assert table_rows(split_fold(events, cuts)) == whole


@pytest.mark.parametrize("seed", range(5))
def test_topic_interleaving_does_not_change_the_rows(seed: int) -> None:
    placed = mixed_histories()
    reference = table_rows(BatchDeltas.collect([p.event for p in placed]))
    shuffled = interleave(placed, seed)
    assert [p.event for p in shuffled] != [p.event for p in placed]
    assert table_rows(BatchDeltas.collect([p.event for p in shuffled])) == reference


def test_rows_of_a_complete_refund_run() -> None:
    events, state = drive([make_input("agent-r", 0, "refund please")])
    assert state is not None
    deltas = BatchDeltas.collect(events)
    agent = deltas.agents["agent-r"]
    assert (agent.events, agent.runs_completed, agent.runs_failed) == (len(events), 1, 0)
    assert (agent.prompt_tokens, agent.completion_tokens) == (
        state.usage.prompt_tokens,
        state.usage.completion_tokens,
    )
    (run,) = deltas.runs.values()
    outcome = next(e for e in events if isinstance(e, RunCompleted))
    assert run.status == "completed" and run.output == outcome.output
    assert (run.steps, run.tool_calls) == (outcome.steps, outcome.tool_calls)
    assert run.correlation_id == events[0].envelope.event_id
    statuses = {c.tool: (c.status, c.gated) for c in deltas.tool_calls.values()}
    assert statuses == {"lookup_order": ("completed", False), "refund": ("completed", True)}
    (approval,) = deltas.approvals.values()
    assert [d["kind"] for d in approval.decisions] == ["granted"]
    assert approval.arguments_hash and approval.deadline is not None
    [started] = deltas.inputs.values()
    assert (started.run_id, started.input_event_id) == (run.run_id, events[0].envelope.event_id)
    assert (started.kind, started.origin_relation, started.depth) == (None, None, 0)


def test_a_running_run_tallies_and_its_outcome_replaces_the_tallies() -> None:
    events, _ = drive([make_input("agent-t", 0, "where is it")])
    outcome_at = next(i for i, e in enumerate(events) if isinstance(e, RunCompleted))
    running = BatchDeltas.collect(events[:outcome_at])
    (run,) = running.runs.values()
    assert run.status == "running" and run.finished_at is None
    assert run.steps == 2 and run.tool_calls == 1 and run.prompt_tokens == 20
    later = BatchDeltas.collect(events[outcome_at:])
    outcome = events[outcome_at]
    assert isinstance(outcome, RunCompleted)
    final = run.merge(next(iter(later.runs.values())))
    assert (final.status, final.steps, final.prompt_tokens) == (
        "completed",
        outcome.steps,
        outcome.usage.prompt_tokens,
    )
    # an event consumed after the outcome (another topic lagging) changes nothing
    assert final.merge(RunDelta.start(events[1], run.run_id)) == final


def test_a_failed_run_keeps_reason_and_error_class() -> None:
    failed = RunFailed(
        envelope=envelope("agent-f", run_id="run-1"),
        reason="max_steps",
        error_class="budget_exceeded",
        steps=1,
        tool_calls=0,
        usage=TokenUsage(prompt_tokens=3, completion_tokens=4),
        started_at=T0,
    )
    deltas = BatchDeltas.collect([failed])
    run = deltas.runs["run-1"]
    assert (run.status, run.failure_reason, run.error_class) == (
        "failed",
        "max_steps",
        "budget_exceeded",
    )
    assert deltas.agents["agent-f"].runs_failed == 1
    assert deltas.agents["agent-f"].prompt_tokens == 3


def test_the_first_tool_result_wins() -> None:
    done = ToolCallCompleted(
        envelope=envelope(run_id="r"), call_id="c-1", tool="t", result_json="{}", attempts=1
    )
    again = ToolCallFailed(
        envelope=envelope(run_id="r"),
        call_id="c-1",
        tool="t",
        attempts=2,
        error_class="Timeout",
        error_message="late",
    )
    deltas = BatchDeltas.collect([done, again])
    call = deltas.tool_calls["c-1"]
    assert (call.status, call.attempts, call.error_class) == ("completed", 1, None)


@pytest.mark.parametrize(
    ("result", "approval", "requested", "status"),
    [
        ("completed", "denied", True, "completed"),
        ("failed", None, True, "failed"),
        (None, "denied", False, "denied"),
        (None, "expired", False, "expired"),
        (None, "granted", False, "requested"),
        (None, None, True, "requested"),
        (None, "pending", False, "awaiting_approval"),
        (None, None, False, "awaiting_approval"),
    ],
)
def test_tool_call_status(
    result: str | None, approval: str | None, requested: bool, status: str
) -> None:
    assert tool_call_status(result, approval, requested) == status


# -- audit rows and NUL characters ------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(EVENT_TYPES)).flatmap(lambda name: records(EVENT_TYPES[name])))
def test_the_payload_folds_back_into_the_same_event(record: Any) -> None:
    sourced = SourcedEvent.of(record, "agent.x", 3, 42)
    row = dict(zip(("event_id", "type"), sourced.audit_row()[:2], strict=True))
    restored = event_from_payload(row["type"], json.loads(sourced.payload))
    assert restored == sourced.event
    assert "\\u0000" not in sourced.payload
    assert sourced.sanitized == (sourced.event != record)


def test_nul_characters_are_replaced_everywhere_and_flagged() -> None:
    event = AgentInput(
        envelope=envelope(), text="nul\x00here", metadata={"k\x00": "v\x00v", "plain": "ok"}
    )
    sourced = SourcedEvent.of(event, "agent.inputs", 0, 7)
    assert sourced.sanitized
    assert isinstance(sourced.event, AgentInput)
    assert sourced.event.text == f"nul{REPLACEMENT}here"
    assert sourced.event.metadata == {f"k{REPLACEMENT}": f"v{REPLACEMENT}v", "plain": "ok"}
    assert "\\u0000" not in sourced.payload
    assert json.loads(sourced.payload)["text"] == f"nul{REPLACEMENT}here"


def test_an_escaped_backslash_is_not_mistaken_for_a_nul() -> None:
    event = AgentInput(envelope=envelope(), text="a literal \\u0000 is fine")
    clean, payload, sanitized = sanitize(event)
    assert clean is event and not sanitized
    assert json.loads(payload)["text"] == "a literal \\u0000 is fine"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ("[1, 2]", "[1, 2]"),
        ("not json", '"not json"'),
        ('{"n": NaN}', '"{\\"n\\": NaN}"'),
        ('{"a": "x\\u0000y"}', '{"a": "x\ufffdy"}'),
        (None, None),
    ],
)
def test_jsonb_text(raw: str | None, expected: str | None) -> None:
    out = jsonb_text(raw)
    assert out is None if expected is None else json.loads(out or "") == json.loads(expected)


def test_tool_call_arguments_and_results_become_json() -> None:
    events, _ = drive([make_input("agent-j", 0, "where")])
    deltas = BatchDeltas.collect(events)
    (call,) = deltas.tool_calls.values()
    assert json.loads(call.arguments or "") == {"order_id": "o-1"}
    assert json.loads(call.result or "")["ok"] is True


def test_decisions_keep_topic_order_and_what_the_inbox_needs() -> None:
    events, _ = drive([make_input("agent-d", 0, "refund please")])
    request = next(e for e in events if isinstance(e, ApprovalRequested))
    late = ApprovalDenied(
        envelope=result_envelope(request, "late", source="cli", delay_ms=10),
        call_id=request.call_id,
        arguments_hash=request.arguments_hash,
        approver="carol",
    )
    deltas = BatchDeltas.collect([*events, late])
    approval = deltas.approvals[request.call_id]
    assert [(d["kind"], d["approver"]) for d in approval.decisions] == [
        ("granted", "alice"),
        ("denied", "carol"),
    ]
    assert approval.deadline == request.expires_at
    assert approval.requested_at == request.envelope.occurred_at


def test_deltas_of_random_histories_merge_like_one_batch() -> None:
    rng = random.Random(11)
    placed = histories(40, runs_per_agent=2)
    events = [p.event for p in interleave(placed, 5)]
    for _ in range(20):
        cuts = rng.sample(range(len(events)), k=rng.randint(1, 30))
        assert table_rows(split_fold(events, cuts)) == table_rows(BatchDeltas.collect(events))


def test_agent_delta_takes_the_event_time_range() -> None:
    first = make_input("agent-a", 0, "one", at_s=10)
    second = make_input("agent-a", 1, "two", at_s=5)
    delta = AgentDelta.start(first)
    delta.add(first)
    delta.add(second)
    assert delta.first_event_at == T0 + timedelta(seconds=5)
    assert delta.updated_at == T0 + timedelta(seconds=10)
    assert astuple(delta)[0] == "agent-a"


def test_cancelled_runs_count_and_keep_who_cancelled_and_the_spec() -> None:
    steered = ControlWorld.make("cancel")
    deltas = BatchDeltas.collect(
        [e for e in steered.before if e.envelope.agent_id == steered.cancelled]
    )
    [run] = deltas.runs.values()
    assert (run.status, run.cancelled_by, run.cancel_reason) == ("cancelled", "ops", "wrong order")
    assert run.spec_version == 1 and run.spec_hash is not None
    agent = deltas.agents[steered.cancelled]
    assert (agent.runs_cancelled, agent.runs_failed, agent.paused) == (1, 0, None)


def test_the_last_pause_or_resume_wins_across_batches() -> None:
    def pause(n: int, kind: type[AgentPaused] | type[AgentResumed]) -> Event:
        return kind(envelope=envelope("a", occurred_at=T0 + timedelta(seconds=n)), requested_by="o")

    events = [pause(0, AgentPaused), pause(1, AgentResumed), pause(2, AgentPaused)]
    for cut in range(len(events) + 1):
        folded = split_fold(events, [cut])
        assert folded.agents["a"].paused is True
    assert BatchDeltas.collect(events[:2]).agents["a"].paused is False
    assert BatchDeltas.collect([]).agents == {}


def test_an_erasure_reaches_stored_facts_unless_the_batch_replaced_or_erased_them() -> None:
    def fact(n: int, key: str) -> Event:
        at = T0 + timedelta(seconds=n)
        return MemoryRecorded(
            envelope=envelope("a", occurred_at=at), key=key, value=f"v{n}", recorded_by="o"
        )

    def erase(n: int, key: str | None) -> Event:
        at = T0 + timedelta(seconds=n)
        return MemoryErased(envelope=envelope("a", occurred_at=at), key=key, requested_by="o")

    memory = BatchDeltas.collect(
        [erase(0, "s"), fact(1, "a"), erase(2, "a"), fact(3, "b"), erase(4, None), fact(5, "a")]
    ).memory["a"]
    assert [(e.stored_keys, e.keeps, e.values) for e in memory.erasures] == [
        (("s",), (), ()),  # a stored fact
        ((), (), ("v1",)),  # the batch's own fact, nothing stored
        (None, ("a", "b", "s"), ("v3",)),  # every stored fact the batch did not touch
    ]
    assert {k: f.value for k, f in memory.facts.items()} == {"a": "v5"}
    again = BatchDeltas.collect([erase(0, None), erase(1, None), erase(2, "x")]).memory["a"]
    assert [e.stored_keys for e in again.erasures] == [None, (), ()]


# -- conversations across agents ---------------------------------------------------------------


def outcomes_of(events: list[Event]) -> dict[str, RunOutcome]:
    return {
        e.envelope.run_id or "": e
        for e in events
        if isinstance(e, RunCompleted | RunFailed | RunHandedOff)
    }


def shape(tree: list[TreeRun]) -> set[tuple[int, str, str | None, str | None, str]]:
    """(level, agent, parent's agent, kind, status) of each run, once it is checked that the
    tree is depth first: each run comes under the last run one level up, which started it."""
    agents = {r.run_id: r.agent_id for r in tree}
    above: list[TreeRun] = []
    for run in tree:
        del above[run.level :]
        assert run.parent_run_id == (above[-1].run_id if above else None) or run.level == 0
        above.append(run)
    return {
        (r.level, r.agent_id, agents.get(r.parent_run_id or ""), r.kind, r.status) for r in tree
    }


def test_inputs_name_the_run_they_start_its_kind_and_the_run_that_started_it() -> None:
    team = TeamWorld.make("inputs")
    deltas = BatchDeltas.collect(team.events)
    lead_run = team.root_run(0)
    delegated = {i.agent_id: i for i in deltas.inputs.values() if i.parent_run_id == lead_run}
    assert sorted(delegated) == [f"{team.lead}/researcher", f"{team.lead}/writer"]
    timers = {e.call_id for e in team.events if isinstance(e, TimerSet) and e.agent_id == team.lead}
    assert {i.call_id for i in delegated.values()} == timers
    assert {(i.kind, i.origin_relation, i.depth) for i in delegated.values()} == {
        ("researcher", "delegated", 1),
        ("writer", "delegated", 1),
    }
    for started in deltas.inputs.values():
        assert started.run_id == run_id_of(started.input_event_id)
    # every run of a conversation carries its root input's id, across agents
    conversations = {r.correlation_id for r in deltas.runs.values()}
    assert conversations == {root.envelope.event_id for root in team.roots}


def test_a_handed_off_run_ends_as_such_and_its_successor_knows_it() -> None:
    team = TeamWorld.make("handoff")
    deltas = BatchDeltas.collect(team.events)
    handed = deltas.runs[team.root_run(1)]
    assert handed.status is RunStatus.HANDED_OFF and handed.finished
    assert (handed.handoff_kind, handed.handoff_agent_id) == ("refunds", f"{team.lead}/refunds")
    assert handed.handoff_note == "wants a refund: refund please, o-1 arrived broken"
    successor = deltas.inputs[handed.handoff_run_id or ""]
    assert (successor.origin_relation, successor.parent_run_id) == ("handed_off", handed.run_id)
    assert successor.call_id is None  # it answers nobody: the handing-off run was a root
    lead = deltas.agents[team.lead]
    assert (lead.runs_completed, lead.runs_handed_off) == (1, 1)
    state = team.states[team.lead]
    assert (lead.prompt_tokens, lead.completion_tokens) == (
        state.usage.prompt_tokens,
        state.usage.completion_tokens,
    )


def test_the_tree_from_the_topics_links_every_run_to_the_run_that_started_it() -> None:
    team = TeamWorld.make("tree")
    inputs = [e for e in team.events if isinstance(e, AgentInput)]
    outcomes = outcomes_of(team.events)
    refused = {inputs[-1].envelope.event_id}  # as if the processor dead-lettered the last one
    trees = topic_trees(
        inputs,
        outcomes.values(),
        {root.envelope.event_id for root in team.roots},
        refused=refused,
        running_tokens={team.root_run(2): 7},
    )
    lead, held = team.lead, team.held
    assert [shape(tree) for tree in trees] == [
        {
            (0, lead, None, "triage", "completed"),
            (1, f"{lead}/researcher", lead, "researcher", "completed"),
            (2, f"{lead}/researcher/librarian", f"{lead}/researcher", "librarian", "completed"),
            (1, f"{lead}/writer", lead, "writer", "completed"),
        },
        {
            (0, lead, None, "triage", "handed_off"),
            (1, f"{lead}/refunds", lead, "refunds", "completed"),
        },
        {
            (0, held, None, "triage", "running"),
            (1, f"{held}/researcher", held, "researcher", "completed"),
            (1, f"{held}/writer", held, "writer", "running"),
        },
    ]
    for run in (r for tree in trees for r in tree):
        outcome = outcomes.get(run.run_id)
        if outcome is None:
            assert run.latency_ms is None and run.result is None
            continue
        assert run.tokens == outcome.usage.total
        assert run.result == outcome_summary(outcome)[1]
        elapsed = outcome.envelope.occurred_at - outcome.started_at
        assert run.latency_ms == elapsed.total_seconds() * 1000
    tokens = {r.agent_id: r.tokens for r in trees[2]}
    assert (tokens[held], tokens[f"{held}/writer"]) == (7, None)


def test_a_run_whose_parent_is_unknown_is_shown_first() -> None:
    def run(run_id: str, parent: str | None, at_s: int) -> TreeRun:
        at = T0 + timedelta(seconds=at_s)
        return TreeRun(run_id, "a", None, "running", None, parent, None, None, at, None)

    ordered = tree_order([run("c", "b", 2), run("b", "missing", 1), run("d", "b", 3)])
    assert [(r.run_id, r.level) for r in ordered] == [("b", 0), ("c", 1), ("d", 1)]
