"""Agents working together, in the pure state machine: kinds, delegation, handoff, the limits
of a chain and its budgets. No I/O: a team of states driven by the scripted team world."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from builders import T0, envelope
from hypothesis import given, settings
from hypothesis import strategies as st
from world import Team, approve, team, timer_fired

from agentstream.processors.core.machine import (
    Applied,
    Duplicate,
    Rejected,
    fold,
    run_id_of,
    transition,
)
from agentstream.processors.core.state import AgentState, evolve
from agentstream.processors.replay.history import feeds_back
from agentstream.schemas.events import (
    AgentInput,
    ApprovalRequested,
    DelegationReturned,
    DelegationStatus,
    Event,
    ModelCallRequested,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunFailed,
    RunHandedOff,
    RunRelation,
    TimerPurpose,
    TimerSet,
)
from agentstream.schemas.reasons import DeadLetterReason, RunFailure

E = TypeVar("E", bound=Event)

CATALOG = team()
#: the bookkeeping every applied event updates, whatever it did
_BOOKKEEPING = {"version", "recent_event_ids", "last_event_id", "updated_at"}


def ask(text: str, agent: str = "ana", kind: str | None = None) -> AgentInput:
    return AgentInput(envelope=envelope(agent), text=text, kind=kind)


def of(events: list[Event], kind: type[E], agent: str | None = None) -> list[E]:
    """The events of type ``kind`` (keyed to ``agent``, if given), in order."""
    return [e for e in events if isinstance(e, kind) and agent in (None, e.envelope.agent_id)]


def one(events: list[Event], kind: type[E], agent: str | None = None) -> E:
    [found] = of(events, kind, agent)
    return found


def tool_messages(request: ModelCallRequested) -> list[dict[str, Any]]:
    return [m for m in json.loads(request.messages_json) if m["role"] == "tool"]


def settled(squad: Team) -> None:
    """Nothing was refused, and every agent of the team is idle."""
    assert squad.rejected == []
    assert {a: s.status for a, s in squad.states.items()} == dict.fromkeys(squad.states, "idle")


def _recorded_and_ignored(decision: Applied | Duplicate | Rejected, before: AgentState) -> None:
    assert isinstance(decision, Applied) and decision.emits == ()
    after = decision.state.model_dump(exclude=_BOOKKEEPING)
    assert after == before.model_dump(exclude=_BOOKKEEPING)


# --- Kinds -----------------------------------------------------------------------------------


def test_the_first_input_binds_the_agent_to_its_kind_which_serves_it() -> None:
    decision = transition(None, ask("hello", "w-1", kind="writer"), CATALOG)
    assert isinstance(decision, Applied) and decision.state.kind == "writer"
    [request] = decision.emits
    assert isinstance(request, ModelCallRequested)
    assert request.system_prompt == "You are the writer."
    assert json.loads(request.tools_json) == []


def test_an_input_naming_no_kind_binds_the_agent_to_the_default_kind() -> None:
    decision = transition(None, ask("hello", "t-1"), CATALOG)
    assert decision.state.kind == "triage" == CATALOG.default.newest.name
    [request] = decision.emits
    assert (
        isinstance(request, ModelCallRequested) and request.system_prompt == "You are the triage."
    )


def test_an_input_for_a_kind_not_served_is_rejected_and_binds_nothing() -> None:
    decision = transition(None, ask("hello", "n-1", kind="poet"), CATALOG)
    assert isinstance(decision, Rejected)
    assert decision.error_class is DeadLetterReason.UNKNOWN_KIND
    assert "'poet'" in decision.reason and "triage, researcher, writer, refunds" in decision.reason
    assert decision.state.kind is None and decision.state.version == 0
    assert transition(decision.state, ask("hello", "n-1", kind="writer"), CATALOG).state.kind == (
        "writer"
    )


def test_an_agent_keeps_its_kind_whatever_later_inputs_ask_for() -> None:
    first = transition(None, ask("first", "w-2", kind="writer"), CATALOG)
    refused = transition(first.state, ask("be a researcher", "w-2", kind="researcher"), CATALOG)
    assert isinstance(refused, Rejected)
    assert refused.error_class is DeadLetterReason.KIND_MISMATCH
    assert "is of kind 'writer'" in refused.reason and "'researcher'" in refused.reason
    assert refused.state == first.state
    same = transition(first.state, ask("second", "w-2", kind="writer"), CATALOG)
    unnamed = transition(same.state, ask("third", "w-2"), CATALOG)
    assert isinstance(same, Applied) and isinstance(unnamed, Applied)
    assert [q.text for q in unnamed.state.queue] == ["second", "third"]
    assert unnamed.state.kind == "writer"


def test_an_agent_from_before_kinds_is_of_the_default_kind() -> None:
    squad = Team(CATALOG)
    squad.run(ask("where is it", "old"))
    # as a snapshot written before kinds reads: runs, and no kind
    before_kinds = evolve(squad["old"], kind=None)
    assert before_kinds.runs_completed == 1
    refused = transition(before_kinds, ask("hi", "old", kind="writer"), CATALOG)
    assert isinstance(refused, Rejected)
    assert refused.error_class is DeadLetterReason.KIND_MISMATCH
    assert "is of kind 'triage'" in refused.reason
    named = transition(before_kinds, ask("hi", "old", kind="triage"), CATALOG)
    assert isinstance(named, Applied) and named.state.kind == "triage"
    # one that never ran anything is bound by its first input, as a new agent is
    unused = evolve(AgentState.new("fresh", "tenant-1"), paused=True)
    assert transition(unused, ask("hi", "fresh", kind="writer"), CATALOG).state.kind == "writer"


def test_a_run_from_before_kinds_finishes_on_the_default_kind() -> None:
    squad = Team(CATALOG)
    [request] = squad.send(ask("ask_writer: hi", "mid")).emits
    squad.states["mid"] = evolve(squad["mid"], kind=None)
    out = squad.settle([request])
    # served by another kind, the run would fail as spec_version_unavailable
    assert one(out, RunCompleted, "mid")
    prompts = {r.system_prompt for r in of(out, ModelCallRequested, "mid")}
    assert prompts == {"You are the triage."}
    settled(squad)


# --- Delegation: parallel calls --------------------------------------------------------------

PARALLEL = "ask_researcher ask_writer: where is o-1?"


def _returns_held(first: AgentInput) -> tuple[Team, list[DelegationReturned], list[Event]]:
    """A team whose parent delegated to the researcher and the writer; both answered, and
    their answers are held back. Also every event emitted."""
    squad = Team(CATALOG)
    out = squad.run(first, hold=lambda e: isinstance(e, DelegationReturned))
    returns = of(squad.held, DelegationReturned)
    squad.held = []
    return squad, returns, out


def test_each_delegation_starts_a_run_of_its_kind_with_the_task_and_a_timer() -> None:
    squad = Team(CATALOG)
    first = ask(PARALLEL)
    [request] = squad.send(first).emits
    reply = squad.world(request)
    assert reply is not None
    answered = squad.send(reply)
    parent = squad["ana"]
    assert parent.status == "delegating" and parent.run is not None
    pending = parent.run.pending_tools
    tasks = of(list(answered.emits), AgentInput)
    timers = of(list(answered.emits), TimerSet)
    assert [t.envelope.agent_id for t in tasks] == ["ana/researcher", "ana/writer"]
    assert [(t.kind, t.text) for t in tasks] == [
        ("researcher", "where is o-1?"),
        ("writer", "where is o-1?"),
    ]
    for task, call, timer in zip(tasks, pending, timers, strict=True):
        origin = task.origin
        assert origin is not None and origin.relation is RunRelation.DELEGATED
        assert (origin.depth, origin.lineage) == (1, ["triage"])
        assert (origin.reply_agent_id, origin.reply_run_id, origin.reply_call_id) == (
            "ana",
            parent.run.run_id,
            call.call_id,
        )
        # the child's run joins the conversation, and its id is known before it starts
        assert task.envelope.correlation_id == first.envelope.event_id
        assert call.status == "delegated" and call.child_agent_id == task.envelope.agent_id
        assert call.child_run_id == run_id_of(task.envelope.event_id)
        assert timer.purpose is TimerPurpose.DELEGATION and timer.call_id == call.call_id
        assert timer.fire_at == call.due_at == T0 + timedelta(hours=1)


def test_answers_reach_the_next_model_call_in_the_order_of_the_calls_whatever_their_order() -> None:
    first = ask(PARALLEL)
    _, returns, _ = _returns_held(first)
    # the writer answers at once; the researcher looks the order up first
    assert [r.child_agent_id for r in returns] == ["ana/writer", "ana/researcher"]
    requests = []
    for order in (returns, returns[::-1]):
        squad, _, _ = _returns_held(first)
        assert squad.send(order[0]).emits == (), "the parent waits for every delegated call"
        requests.append(one(list(squad.send(order[1]).emits), ModelCallRequested))
        squad.settle(requests[-1:])
        settled(squad)
    assert requests[0].messages_json == requests[1].messages_json
    results = tool_messages(requests[0])
    assert [m["name"] for m in results] == ["ask_researcher", "ask_writer"]
    assert results[0]["content"].startswith("ana/researcher on 'where is o-1?': [{")
    assert results[1]["content"] == "ana/writer on 'where is o-1?': []"


def test_a_redelivered_answer_is_a_duplicate() -> None:
    squad, returns, _ = _returns_held(ask(PARALLEL))
    squad.send(returns[0])
    again = squad.send(returns[0])
    assert isinstance(again, Duplicate) and again.emits == ()


def test_each_kind_runs_as_an_agent_of_its_own_and_counts_its_own_usage() -> None:
    squad = Team(CATALOG)
    squad.run(ask(PARALLEL))
    settled(squad)
    assert {a: s.kind for a, s in squad.states.items()} == {
        "ana": "triage",
        "ana/researcher": "researcher",
        "ana/writer": "writer",
    }
    parent = squad["ana"]
    assert parent.runs_completed == 1 and parent.usage.total == 30  # its own two steps
    assert squad["ana/researcher"].usage.total == 30 and squad["ana/writer"].usage.total == 15


# --- Delegation: timer, late answers ---------------------------------------------------------


def stalls(*agents: str) -> Callable[[Event], bool]:
    """What holds back the model requests of ``agents``: their runs stall."""
    return lambda e: isinstance(e, ModelCallRequested) and e.envelope.agent_id in agents


def _children_stall(text: str = "ask_researcher: where is o-1?") -> tuple[Team, list[TimerSet]]:
    """The parent delegated; the children's model never answers. The parent's timers."""
    squad = Team(CATALOG)
    out = squad.run(ask(text), hold=stalls("ana/researcher", "ana/writer"))
    return squad, of(out, TimerSet, "ana")


def test_the_delegation_timer_times_the_call_out_and_cancels_the_child() -> None:
    squad, [timer] = _children_stall()
    early = squad.send(timer_fired(timer, at=timer.fire_at - timedelta(seconds=1)))
    assert isinstance(early, Rejected) and early.error_class is DeadLetterReason.TIMER_NOT_DUE
    squad.rejected = []
    child = squad["ana/researcher"]
    assert child.run is not None
    fired = squad.send(timer_fired(timer))
    cancel = one(list(fired.emits), RunCancelRequested)
    assert (cancel.envelope.agent_id, cancel.envelope.run_id) == (
        "ana/researcher",
        child.run.run_id,
    )
    assert cancel.requested_by == "agent:ana" and "did not answer by" in cancel.reason
    [timed_out] = tool_messages(one(list(fired.emits), ModelCallRequested))
    assert json.loads(timed_out["content"])["status"] == DelegationStatus.TIMED_OUT
    out = squad.settle(list(fired.emits))
    cancelled = one(out, RunCancelled, "ana/researcher")
    assert cancelled.cancelled_by == "agent:ana"
    # the child says it was cancelled; the parent had moved on and records it, ignored
    assert one(out, DelegationReturned).status is DelegationStatus.CANCELLED
    assert squad.rejected == []
    assert squad["ana/researcher"].runs_cancelled == 1


def test_an_answer_after_its_call_timed_out_is_recorded_and_ignored() -> None:
    squad, (writer, researcher), out = _returns_held(ask(PARALLEL))
    timer = next(t for t in of(out, TimerSet) if t.call_id == researcher.call_id)
    squad.send(timer_fired(timer))  # the researcher's call times out
    _recorded_and_ignored(squad.send(researcher), squad["ana"])
    request = one(list(squad.send(writer).emits), ModelCallRequested)
    statuses = [json.loads(m["content"]).get("status") for m in tool_messages(request)[:1]]
    assert statuses == [DelegationStatus.TIMED_OUT]
    squad.settle([request])
    # and once the parent's run ended, a late answer is recorded and ignored all the same
    ended = squad["ana"]
    assert ended.run is None
    late = evolve(researcher, envelope=evolve(researcher.envelope, event_id="late-answer"))
    _recorded_and_ignored(squad.send(late), ended)


# --- Handoff ---------------------------------------------------------------------------------


def test_a_handoff_ends_the_run_and_the_receiver_continues_the_conversation() -> None:
    squad = Team(CATALOG)
    out = squad.run(ask("handoff_to_refunds: wants the money back"))
    settled(squad)
    handed = one(out, RunHandedOff)
    assert (handed.to_kind, handed.to_agent_id, handed.note) == (
        "refunds",
        "ana/refunds",
        "wants the money back",
    )
    assert handed.to_run_id == run_id_of(one(out, AgentInput, "ana/refunds").envelope.event_id)
    assert of(out, RunCompleted, "ana") == [] and of(out, DelegationReturned) == []
    parent = squad["ana"]
    assert (parent.runs_handed_off, parent.runs_completed) == (1, 0)
    task = one(out, AgentInput, "ana/refunds")
    assert task.origin is not None and task.origin.relation is RunRelation.HANDED_OFF
    assert task.origin.reply_agent_id is None, "a root run's receiver answers nobody"
    first_call = of(out, ModelCallRequested, "ana/refunds")[0]
    messages = json.loads(first_call.messages_json)
    assert messages == [
        {"role": "user", "content": "handoff_to_refunds: wants the money back"},
        {"role": "user", "content": "wants the money back"},
    ]
    assert squad["ana/refunds"].kind == "refunds"
    assert squad["ana/refunds"].runs_completed == 1


def test_a_handoff_from_a_delegated_run_answers_the_run_that_delegated() -> None:
    squad = Team(CATALOG)
    out = squad.run(ask("ask_researcher: handoff_to_writer: draft a reply"))
    settled(squad)
    assert of(out, DelegationReturned, "ana") == [one(out, DelegationReturned)]
    answer = one(out, DelegationReturned)
    assert answer.child_agent_id == "ana/researcher/writer"
    assert answer.status is DelegationStatus.COMPLETED
    receiver = one(out, AgentInput, "ana/researcher/writer").origin
    assert receiver is not None and receiver.relation is RunRelation.HANDED_OFF
    assert (receiver.depth, receiver.lineage) == (2, ["triage", "researcher"])
    assert receiver.reply_agent_id == "ana"
    parent = one(out, RunCompleted, "ana")
    assert "ana/researcher/writer on 'draft a reply'" in parent.output
    assert squad["ana/researcher"].runs_handed_off == 1


# --- Limits of a chain -----------------------------------------------------------------------


def _refused(budgets: dict[str, dict[str, object]], text: str) -> tuple[Team, RunFailed]:
    """The team after ``text``, and its one run that failed as delegation_refused."""
    squad = Team(team(**budgets))
    out = squad.run(ask(text))
    settled(squad)
    [failed] = [f for f in of(out, RunFailed) if f.error_class == RunFailure.DELEGATION_REFUSED]
    return squad, failed


def test_a_delegation_deeper_than_max_depth_fails_the_delegating_run() -> None:
    squad, failed = _refused({"researcher": {"max_depth": 1}}, "ask_researcher: ask_writer: hi")
    assert failed.envelope.agent_id == "ana/researcher"
    assert failed.reason == (
        "delegation depth 2 is over max_depth 1: triage -> researcher -> writer"
    )
    assert set(squad.states) == {"ana", "ana/researcher"}, "the refused run starts nothing"
    squad, failed = _refused({"triage": {"max_depth": 0}}, "ask_researcher: hi")
    assert failed.envelope.agent_id == "ana"
    assert failed.reason == "delegation depth 1 is over max_depth 0: triage -> researcher"
    assert set(squad.states) == {"ana"}


def test_the_refusal_is_the_delegated_calls_answer_to_its_parent() -> None:
    squad = Team(team(researcher={"max_depth": 1}))
    out = squad.run(ask("ask_researcher: ask_writer: hi"))
    answer = one(out, DelegationReturned)
    assert answer.status is DelegationStatus.FAILED
    assert answer.reason is not None and answer.reason.startswith("delegation_refused: ")
    [result] = tool_messages(of(out, ModelCallRequested, "ana")[-1])
    assert json.loads(result["content"]) == {"error": answer.reason, "status": "failed"}
    assert one(out, RunCompleted, "ana")


def test_a_delegation_to_a_kind_already_in_the_chain_fails_as_a_cycle() -> None:
    squad, failed = _refused({}, "ask_researcher: ask_triage: hi")
    assert failed.envelope.agent_id == "ana/researcher"
    assert set(squad.states) == {"ana", "ana/researcher"}
    assert failed.reason == (
        "delegation cycle: triage -> researcher -> triage "
        "(ask_triage asks a kind already in the chain)"
    )


# --- Budgets ---------------------------------------------------------------------------------


def test_a_child_gets_what_its_parent_had_left() -> None:
    squad = Team(team(triage={"max_tokens": 100, "max_steps": 5}))
    out = squad.run(ask("ask_writer: hi"), hold=lambda e: isinstance(e, AgentInput))
    origin = one(squad.held, AgentInput).origin
    assert origin is not None
    timer = one(out, TimerSet)
    assert (origin.max_tokens, origin.max_steps, origin.deadline_at) == (85, 4, timer.fire_at)


def test_a_child_over_its_passed_cap_fails_and_its_usage_fails_the_parent() -> None:
    squad = Team(team(triage={"max_tokens": 40}))
    out = squad.run(ask("ask_researcher: where is o-1?"))
    settled(squad)
    child = one(out, RunFailed, "ana/researcher")
    assert child.error_class == RunFailure.BUDGET_EXCEEDED
    assert child.reason == "max_tokens: the run used 30 of 25"
    assert one(out, DelegationReturned).usage.total == 30
    parent = one(out, RunFailed, "ana")
    assert parent.error_class == RunFailure.BUDGET_EXCEEDED
    assert parent.reason == "max_tokens: the run and its delegated runs used 45 of 40"


def test_children_within_their_caps_push_the_parent_over_and_it_cancels_the_rest() -> None:
    squad = Team(team(triage={"max_tokens": 40}))
    out = squad.run(ask("ask_writer ask_writer ask_researcher: hi"), hold=stalls("ana/researcher"))
    assert squad.rejected == []
    # one writer agent answers both calls, one after the other, 15 tokens each
    assert len(of(out, RunCompleted, "ana/writer")) == 2
    parent = one(out, RunFailed, "ana")
    assert parent.reason == "max_tokens: the run and its delegated runs used 45 of 40"
    cancel = one(out, RunCancelRequested, "ana/researcher")
    assert cancel.reason.startswith("the delegating run ")
    assert one(out, RunCancelled, "ana/researcher").cancelled_by == "agent:ana"


def test_the_steps_of_children_count_against_the_parents_max_steps() -> None:
    squad = Team(team(triage={"max_steps": 3}))
    out = squad.run(ask("ask_writer ask_writer: hi"))
    settled(squad)
    assert [i.origin.max_steps for i in of(out, AgentInput) if i.origin] == [2, 2]
    parent = one(out, RunFailed, "ana")
    assert parent.reason == "max_steps: the run used all 3 model steps (2 by its delegated runs)"


def test_a_child_capped_by_the_steps_its_parent_had_left() -> None:
    squad = Team(team(triage={"max_steps": 2}))
    out = squad.run(ask("ask_researcher: where is o-1?"))
    settled(squad)
    child = one(out, RunFailed, "ana/researcher")
    assert child.reason == "max_steps: the run used all 1 model steps"
    assert one(out, DelegationReturned).steps == 1
    assert one(out, RunFailed, "ana").error_class == RunFailure.BUDGET_EXCEEDED


# --- Cancel, approvals -----------------------------------------------------------------------


def test_cancelling_a_parent_cancels_the_runs_it_waits_for() -> None:
    squad, _ = _children_stall(PARALLEL)
    children = {a: s.run.run_id for a, s in squad.states.items() if a != "ana" and s.run}
    assert sorted(children) == ["ana/researcher", "ana/writer"]
    stop = RunCancelRequested(
        envelope=envelope("ana", occurred_at=T0 + timedelta(seconds=1)),
        requested_by="ops",
        reason="customer left",
    )
    decision = squad.send(stop)
    cancels = of(list(decision.emits), RunCancelRequested)
    assert {(c.envelope.agent_id, c.envelope.run_id) for c in cancels} == set(children.items())
    out = squad.settle(list(decision.emits))
    assert {c.envelope.agent_id for c in of(out, RunCancelled)} == {"ana", *children}
    assert {a.status for a in of(out, DelegationReturned)} == {DelegationStatus.CANCELLED}
    # the children's model answers come after all: recorded and ignored, like their answers
    squad.release()
    settled(squad)
    assert squad["ana"].runs_cancelled == 1


def test_a_delegated_run_waits_for_an_approval_and_then_answers() -> None:
    squad = Team(CATALOG)
    out = squad.run(ask("ask_refunds: refund o-1 please"))
    request = one(out, ApprovalRequested)
    assert request.envelope.agent_id == "ana/refunds" and request.tool == "refund"
    assert squad["ana/refunds"].status == "awaiting_approval"
    assert squad["ana"].status == "delegating"
    out = squad.settle(squad.send(approve(request)).emits)
    settled(squad)
    answer = one(out, DelegationReturned)
    assert answer.status is DelegationStatus.COMPLETED and answer.steps == 2
    assert "ana/refunds on 'refund o-1 please'" in one(out, RunCompleted, "ana").output


# --- Properties ------------------------------------------------------------------------------

TEAM_TEXTS = st.lists(
    st.sampled_from(
        [
            PARALLEL,
            "handoff_to_refunds: wants the money back",
            "ask_researcher: handoff_to_writer: draft it",
            "ask_writer ask_writer: hi",
            "where is it",
        ]
    ),
    min_size=1,
    max_size=3,
)


def _simulate_team(data: st.DataObject, texts: list[str]) -> tuple[Team, dict[str, list[Event]]]:
    """Deliver everything in an order hypothesis picks: the root's inputs in their order, what
    one agent sends another in the order it sent it (one producer, one topic partition), the
    rest in any order. The team, and what each agent emitted."""
    squad = Team(CATALOG)
    emitted: dict[str, list[Event]] = {}
    in_flight: list[Event] = [ask(t) for t in texts]
    while in_flight:
        event = in_flight.pop(data.draw(st.sampled_from(_deliverable(in_flight))))
        decision = squad.send(event)
        assert not isinstance(decision, Rejected | Duplicate), decision
        emitted.setdefault(event.envelope.agent_id, []).extend(decision.emits)
        for out in decision.emits:
            reply = out if feeds_back(out) else squad.world(out)
            if reply is not None:
                in_flight.append(reply)
    return squad, emitted


def _deliverable(in_flight: list[Event]) -> list[int]:
    """What may come next: the first of each ordered stream, and any result of a worker."""
    firsts: dict[tuple[str, ...], int] = {}
    free = []
    for i, event in enumerate(in_flight):
        env = event.envelope
        if env.source not in ("test", "processor"):
            free.append(i)
            continue
        sender = event.child_agent_id if isinstance(event, DelegationReturned) else ""
        firsts.setdefault((env.source, env.agent_id, type(event).__name__, sender), i)
    return sorted([*firsts.values(), *free])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), texts=TEAM_TEXTS)
def test_every_root_input_ends_once_and_every_agent_folds_the_same_twice(
    data: st.DataObject, texts: list[str]
) -> None:
    squad, emitted = _simulate_team(data, texts)
    settled(squad)
    root = squad["ana"]
    assert root.runs_completed + root.runs_handed_off == len(texts)
    by_agent: dict[str, list[Event]] = {}
    for event in squad.delivered:
        by_agent.setdefault(event.envelope.agent_id, []).append(event)
    for agent, events in by_agent.items():
        assert fold(events, CATALOG) == fold(events, CATALOG) == squad[agent]
        state: AgentState | None = None
        replayed: list[Event] = []
        for event in events:
            decision = transition(state, event, CATALOG)
            state = decision.state
            replayed += decision.emits
        assert [e.model_dump_json() for e in replayed] == [
            e.model_dump_json() for e in emitted[agent]
        ]


# --- A chain's duty and limits follow a handoff --------------------------------------------


def test_a_handoff_passes_on_what_the_run_spent_so_the_parent_counts_it() -> None:
    squad = Team(CATALOG)
    out = squad.run(ask("ask_researcher: handoff_to_writer: draft a reply"))
    settled(squad)
    spent = squad["ana/researcher"].usage + squad["ana/researcher/writer"].usage
    answer = one(out, DelegationReturned)
    assert answer.usage == spent and spent.total > squad["ana/researcher/writer"].usage.total
    researcher_steps = one(out, RunHandedOff).steps
    assert answer.steps == researcher_steps + one(out, RunCompleted, "ana/researcher/writer").steps


def test_the_roots_max_depth_rules_the_runs_it_leads_to() -> None:
    # the researcher's own limit (the default, 3) would allow a second level
    _, failed = _refused({"triage": {"max_depth": 1}}, "ask_researcher: ask_writer: hi")
    assert failed.envelope.agent_id == "ana/researcher"
    assert failed.reason == (
        "delegation depth 2 is over max_depth 1: triage -> researcher -> writer"
    )


def test_a_cancel_of_a_run_that_handed_off_stops_the_run_that_took_over() -> None:
    squad = Team(CATALOG)
    squad.run(
        ask("ask_researcher: handoff_to_writer: draft a reply"),
        hold=stalls("ana/researcher/writer"),
    )
    receiver = squad["ana/researcher/writer"].run
    assert receiver is not None
    stop = RunCancelRequested(
        envelope=envelope("ana", occurred_at=T0 + timedelta(seconds=1)),
        requested_by="ops",
        reason="customer left",
    )
    out = squad.settle(list(squad.send(stop).emits))
    cancelled = one(out, RunCancelled, "ana/researcher/writer")
    assert cancelled.envelope.run_id == receiver.run_id
    assert cancelled.cancelled_by == "agent:ana"
    assert squad.rejected == [], "no cancel is dead-lettered on the way"


def test_an_agents_cancel_that_overtakes_the_input_cancels_the_run_when_it_arrives() -> None:
    squad = Team(CATALOG)
    squad.run(ask("ask_writer: hi"), hold=lambda e: isinstance(e, AgentInput))
    task = one(squad.held, AgentInput)
    child_run = run_id_of(task.envelope.event_id)
    early = RunCancelRequested(
        envelope=envelope(
            task.envelope.agent_id,
            run_id=child_run,
            source="processor",
            occurred_at=task.envelope.occurred_at,
        ),
        requested_by="agent:ana",
        reason="the delegating run ended",
    )
    assert isinstance(squad.send(early), Applied), "kept, not dead-lettered"
    out = squad.release()
    cancelled = one(out, RunCancelled, task.envelope.agent_id)
    assert cancelled.envelope.run_id == child_run
    assert of(out, ModelCallRequested, task.envelope.agent_id) == []
    assert one(out, DelegationReturned).status is DelegationStatus.CANCELLED
