"""`replay agent` replays each run on the spec version it recorded, unless told otherwise; an
agent of a team replays with what it sent the others, and with the answers they would send now
(a what-if of a changed kind)."""

from __future__ import annotations

import dataclasses

from builders import agent_input, envelope
from world import Team, lookup_order, respond, support_spec, team

from agentstream.processors.core.machine import SOURCE
from agentstream.processors.core.spec import AgentSpec, Budgets, Catalog, SpecVersions
from agentstream.processors.replay.agent import replay_agent
from agentstream.processors.replay.history import AgentHistory, Recorded, gather
from agentstream.processors.replay.team import replay_team
from agentstream.processors.testing import drive
from agentstream.schemas.events import AgentInput
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


# --- Across agents ---------------------------------------------------------------------------

TEAM = team()
PARALLEL = "ask_researcher ask_writer: where is o-1?"


def recorded_team(*texts: str) -> dict[str, AgentHistory]:
    """Every agent's history as the topics would hold it after a team served ``texts``: the
    records keyed to the agent, and the processor's records keyed to the others."""
    squad = Team(TEAM)
    emitted = squad.run(*(AgentInput(envelope=envelope("ana"), text=t) for t in texts))
    assert squad.rejected == []
    on_topics = list({e.envelope.event_id: e for e in [*squad.delivered, *emitted]}.values())
    placed = [Recorded(e, topic_for(type(e)).name, 0, n) for n, e in enumerate(on_topics)]
    return {
        agent: gather(
            agent,
            0,
            [r for r in placed if r.event.envelope.agent_id == agent],
            [r for r in placed if r.event.envelope.agent_id != agent],
        )
        for agent in squad.states
    }


def test_an_agent_of_a_team_replays_identically_with_what_it_sent_the_others() -> None:
    histories = recorded_team(PARALLEL, "ask_researcher: handoff_to_writer: draft a reply")
    assert sorted(histories) == ["ana", "ana/researcher", "ana/researcher/writer", "ana/writer"]
    for agent, history in histories.items():
        replay = replay_agent(history, TEAM)
        assert replay.identical, (agent, [s.outputs for s in replay.differing()])
        assert replay.orphans == 0 and replay.count("new") == 0
    # the parent's tasks and the children's answers are keyed to the agent they go to
    parent = {type(r.event).__name__ for r in histories["ana"].outputs}
    assert "AgentInput" in parent and "DelegationReturned" not in parent
    child = {type(r.event).__name__ for r in histories["ana/writer"].outputs}
    assert "DelegationReturned" in child and "AgentInput" not in child


def test_the_agents_whose_keys_hold_an_agents_outputs() -> None:
    histories = recorded_team("ask_researcher: handoff_to_writer: draft a reply")
    kinds = ("researcher", "writer")
    # the kinds it may ask, and the one that answered it in the researcher's place
    assert histories["ana"].neighbours(kinds) == [
        "ana/researcher",
        "ana/writer",
        "ana/researcher/writer",
    ]
    # the one it answers, and the one it handed off to
    assert histories["ana/researcher/writer"].neighbours() == ["ana"]
    assert histories["ana/researcher"].neighbours() == ["ana", "ana/researcher/writer"]
    assert histories["ana"].delegated_to() == ["ana/researcher", "ana/researcher/writer"]


def _served_with(spec: AgentSpec) -> Catalog:
    """The team, with ``spec`` in place of its kind."""
    return Catalog.of([spec if k.newest.name == spec.name else k.newest for k in TEAM.kinds])


WRITER = TEAM.kind("writer")
assert WRITER is not None
#: the writer, allowed fewer tokens than its one model step uses
TERSE_WRITER = dataclasses.replace(WRITER.newest, budgets=Budgets(max_tokens=10))


def test_a_team_replayed_on_the_same_specs_answers_the_same() -> None:
    histories = recorded_team(PARALLEL)
    result = replay_team(histories["ana"], TEAM, histories.__getitem__)
    assert result.identical
    assert [c.replay.agent_id for c in result.children] == ["ana/researcher", "ana/writer"]
    assert [a.verdict for a in result.answers] == ["same", "same"]


def test_a_child_whose_history_is_gone_keeps_its_recorded_answer() -> None:
    histories = recorded_team(PARALLEL)

    def retention(agent_id: str) -> AgentHistory:
        return AgentHistory(agent_id, 0) if agent_id == "ana/writer" else histories[agent_id]

    result = replay_team(histories["ana"], _served_with(TERSE_WRITER), retention)
    assert [c.replay.agent_id for c in result.children] == ["ana/researcher"]
    assert [(a.child_agent_id, a.verdict) for a in result.answers] == [("ana/researcher", "same")]
    assert result.identical


def test_a_changed_child_kind_changes_its_answer_and_what_the_parent_does_with_it() -> None:
    histories = recorded_team(PARALLEL)
    plain_replay = replay_agent(histories["ana"], _served_with(TERSE_WRITER))
    assert plain_replay.identical, "without --children the recorded answers are used"
    result = replay_team(histories["ana"], _served_with(TERSE_WRITER), histories.__getitem__)
    assert not result.identical
    researcher, writer = result.children
    assert researcher.identical and not writer.replay.identical
    verdicts = {a.child_agent_id: a.verdict for a in result.answers}
    assert verdicts == {"ana/researcher": "same", "ana/writer": "changed"}
    [answer] = [a for a in result.answers if a.verdict == "changed"]
    paths = {c.path for c in answer.changes}
    assert {"status", "reason", "output"} <= paths
    assert answer.replayed is not None and answer.replayed.status == "failed"
    # the model sees the failure; what it answered is what it recorded
    changed = [o.type for s in result.replay.differing() for o in s.outputs if o.verdict != "same"]
    assert changed == ["ModelCallRequested"]


def test_a_grandchilds_answer_is_replayed_before_its_parents() -> None:
    histories = recorded_team("ask_researcher: ask_writer: hi")
    result = replay_team(histories["ana"], _served_with(TERSE_WRITER), histories.__getitem__)
    [researcher] = result.children
    assert [a.verdict for a in researcher.answers] == ["changed"]
    assert not researcher.replay.identical, "its model is asked with the writer's failure"
    # its model's recorded answer is all it answers with: the same
    assert [a.verdict for a in result.answers] == ["same"]
    assert result.replay.identical and not result.identical


def test_a_child_that_would_wait_now_answers_nothing_and_its_parent_waits_too() -> None:
    histories = recorded_team("ask_researcher: where is o-1?")
    researcher = TEAM.kind("researcher")
    assert researcher is not None
    gated = dataclasses.replace(lookup_order, requires_approval=True)
    tools = tuple(gated if t.name == "lookup_order" else t for t in researcher.newest.tools)
    waits = dataclasses.replace(researcher.newest, tools=tools)
    result = replay_team(histories["ana"], _served_with(waits), histories.__getitem__)
    [child] = result.children
    assert child.replay.waiting_for()[0].startswith("approval of lookup_order call ")
    [answer] = result.answers
    assert answer.verdict == "missing"
    state = result.replay.state
    assert state is not None and state.status == "delegating"
    [withheld] = [s for s in result.replay.steps if s.withheld]
    assert withheld.cause == answer.recorded
    missing = [o.type for s in result.replay.steps for o in s.outputs if o.verdict == "missing"]
    assert missing == ["ModelCallRequested", "RunCompleted"]
    assert result.replay.orphans == 0
    assert result.replay.waiting_for() == [
        f"the answer of ana/researcher to ask_researcher call {answer.call_id}"
    ]
