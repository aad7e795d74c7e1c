"""What-if replays across agents: an agent that delegated, replayed with the answers the agents
it delegated to would send now.

A plain replay of an agent (:func:`~agentstream.processors.replay.agent.replay_agent`) applies
the answers its delegated runs recorded (the DelegationReturned events among its inputs) and
starts nothing. Here each agent it delegated to is replayed as well, from its own recorded
inputs, under the kinds given (a changed spec of the child's kind, say); the answer it sends
in that replay takes the place of the recorded one, and the agent's outputs are diffed with
what it recorded. The children's children are replayed the same way, first.

What a child is replayed from is what it recorded: the tasks it was given, its model's and
tools' answers. A replayed answer arrives where the recorded one did, under its id, so what
the parent does with it lines up, output by output, with what it recorded. Pure: the
histories come from ``read``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentstream.processors.core.spec import Catalog
from agentstream.processors.core.state import evolve
from agentstream.processors.replay.agent import (
    AgentReplay,
    Change,
    Verdict,
    as_json,
    compare,
    plain,
    replay_inputs,
)
from agentstream.processors.replay.history import AgentHistory, Served
from agentstream.schemas.events import DelegationReturned, Event

__all__ = [
    "Answer",
    "Reader",
    "TeamReplay",
    "replay_team",
    "team_json",
]

#: The recorded history of an agent, by its id.
Reader = Callable[[str], AgentHistory]


@dataclass(frozen=True)
class Answer:
    """A delegated call's answer: as recorded, and as its child's replay sends it."""

    call_id: str
    recorded: DelegationReturned | None
    replayed: DelegationReturned | None

    @property
    def changes(self) -> tuple[Change, ...]:
        if self.recorded is None or self.replayed is None:
            return ()
        # the envelope stays the recorded one (see the module's docstring)
        return tuple(compare(_content(self.recorded), _content(self.replayed)))

    @property
    def verdict(self) -> Verdict:
        if self.recorded is None:
            return "new"
        if self.replayed is None:
            return "missing"
        return "changed" if self.changes else "same"

    @property
    def child_agent_id(self) -> str:
        answer = self.replayed or self.recorded
        assert answer is not None  # one of them is always there
        return answer.child_agent_id


@dataclass
class TeamReplay:
    """An agent's replay with its children's answers, and the children's own replays."""

    replay: AgentReplay
    answers: list[Answer] = field(default_factory=list)
    children: list[TeamReplay] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return (
            self.replay.identical
            and all(a.verdict == "same" for a in self.answers)
            and all(c.identical for c in self.children)
        )


def replay_team(history: AgentHistory, spec: Served, read: Reader) -> TeamReplay:
    """Replay the agents ``history``'s agent delegated to (and theirs) under ``spec``, then the
    agent itself with the answers they send in their replays."""
    catalog = Catalog.of(spec)
    found = [read(child) for child in history.delegated_to()]
    # a child with nothing left on the topics (past retention) keeps its recorded answers
    children = [replay_team(child, catalog, read) for child in found if child]
    order = history.applied_order(catalog)
    answers = _answers(history.agent_id, order, children)
    withheld = {
        a.recorded.envelope.event_id
        for a in answers
        if a.recorded is not None and a.replayed is None
    }
    replay = replay_inputs(history, _with_answers(order, answers), catalog, withheld)
    return TeamReplay(replay, answers, children)


def _answers(agent_id: str, order: list[Event], children: list[TeamReplay]) -> list[Answer]:
    """Every call of ``agent_id`` a replayed child answers: its recorded and replayed answer."""
    replayed_agents = {child.replay.agent_id for child in children}
    recorded = {
        e.call_id: e
        for e in order
        if isinstance(e, DelegationReturned) and e.child_agent_id in replayed_agents
    }
    replayed: dict[str, DelegationReturned] = {}
    for child in children:
        for event in child.replay.emitted:
            if isinstance(event, DelegationReturned) and event.envelope.agent_id == agent_id:
                # the agent delegated to, listed before the one it handed off to (whose id
                # it prefixes), answers the call when both would
                replayed.setdefault(event.call_id, event)
    calls = dict.fromkeys([*recorded, *replayed])
    return [Answer(call, recorded.get(call), replayed.get(call)) for call in calls]


def _with_answers(order: list[Event], answers: list[Answer]) -> list[Event]:
    """``order`` with each recorded answer replaced by the replayed one (kept, to be withheld,
    when the child no longer answers); answers never recorded go in by event time."""
    by_id = {a.recorded.envelope.event_id: a for a in answers if a.recorded is not None}
    inputs: list[Event] = []
    for event in order:
        answer = by_id.get(event.envelope.event_id)
        if answer is None or answer.replayed is None:
            inputs.append(event)
        else:
            inputs.append(evolve(answer.replayed, envelope=event.envelope))
    for answer in answers:
        if answer.recorded is None and answer.replayed is not None:
            times = [e.envelope.occurred_at for e in inputs]
            at = bisect.bisect_right(times, answer.replayed.envelope.occurred_at)
            inputs.insert(at, answer.replayed)
    return inputs


def _content(answer: DelegationReturned) -> Any:
    data = plain(answer)
    del data["envelope"]
    return data


def team_json(result: TeamReplay) -> dict[str, Any]:
    """The agent's replay (see ``as_json``), its children's answers and the children's own."""
    return {
        **as_json(result.replay),
        "identical": result.identical,
        "answers": [
            {
                "call_id": a.call_id,
                "child_agent_id": a.child_agent_id,
                "verdict": a.verdict,
                "changes": [c.__dict__ for c in a.changes],
            }
            for a in result.answers
        ],
        "children": [team_json(child) for child in result.children],
    }
