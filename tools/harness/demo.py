"""The demo: the whole product on the embedded stack, in one command.

It starts the broker, the registry and PostgreSQL, then the processor, the tool and model
workers, the approval timer and the projector; sends a scenario's questions; shows each event as
it happens, with its agent and that agent's kind; approves the refund (or asks, with
``--interactive``); prints the outcomes; and stops everything.

Two scenarios. ``SUPPORT``: four questions to the sample support agent (scripted model, three
tools, refunds gated by a person), the last a follow-up that only makes sense with the first
run's answer in memory; then one agent's audit timeline. ``TEAM`` (``--team``): two questions to
the triage agent of the sample team, which asks the orders and the policy agent at once and
hands a refund request over to the refunds agent, where the refund is approved; then a tree of
each conversation, from its events.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from agentstream.processors.core.machine import run_id_of
from agentstream.processors.core.spec import Catalog
from agentstream.processors.loading import DEFAULT_SPEC, load_catalog
from agentstream.schemas.errors import ServiceUnavailableError
from agentstream.schemas.events import (
    AgentInput,
    ApprovalGranted,
    ApprovalRequested,
    Envelope,
    Event,
    ModelCallRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunHandedOff,
    RunOutcome,
    RunRelation,
)
from agentstream.streams.consumer import reader_config
from agentstream.streams.producer import AgentStreamProducer, new_input
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde
from agentstream.streams.topics import TOPICS

QUESTIONS = (
    ("customer-ana", "Where is my order o-1001?"),
    ("customer-ben", "Order o-1003 arrived broken, please refund it."),
    ("customer-cho", "How do returns work?"),
    # queued behind ana's first run, it starts with that run's question and answer
    ("customer-ana", "And which carrier brings it?"),
)
TEAM_SPEC = "agentstream.processors.examples:team"
TEAM_QUESTIONS = (
    # triage asks the orders and the policy agent at once
    ("customer-ana", "Where is my order o-1001, and can I still return it?"),
    # triage hands it over to the refunds agent, whose refund a person approves
    ("customer-ben", "Order o-1003 arrived broken, please refund it."),
)
_WATCHED = [t for t in TOPICS if t.name not in ("agent.state", "agent.dlq")]


@dataclass(frozen=True)
class Scenario:
    """What a demo runs (``spec``, for every service) and asks."""

    spec: str
    questions: tuple[tuple[str, str], ...]
    #: whom the questions go to, as the line announcing them says it
    audience: str
    #: the kind the questions name (None: the deployment's default kind)
    kind: str | None = None


SUPPORT = Scenario(
    DEFAULT_SPEC,
    QUESTIONS,
    "the support agent (scripted model, refunds need approval, a follow-up from memory)",
)
TEAM = Scenario(
    TEAM_SPEC,
    TEAM_QUESTIONS,
    "the triage agent of a team (scripted models; it asks the orders and policy agents at once "
    "and hands refunds over to the refunds agent, where a person approves them)",
    kind="triage",
)


@dataclass
class DemoResult:
    """Every run the questions started, the runs those started in turn, and their events."""

    #: the kind of an agent whose inputs name none
    default_kind: str
    #: the runs of the questions sent, in their order
    asked: list[str] = field(default_factory=list)
    #: each run's input, by run id
    inputs: dict[str, AgentInput] = field(default_factory=dict)
    #: how each run ended, by run id
    outcomes: dict[str, RunOutcome] = field(default_factory=dict)
    #: runs an outcome says were handed the conversation (their inputs may be read later)
    handed_to: set[str] = field(default_factory=set)
    kinds: dict[str, str] = field(default_factory=dict)
    timeline: dict[str, list[Event]] = field(default_factory=dict)
    approvals: list[tuple[ApprovalRequested, str]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)

    def record(self, event: Event) -> bool:
        """Take ``event`` in; False for a re-sent duplicate."""
        if event.event_id in self.seen:
            return False
        self.seen.add(event.event_id)
        self.timeline.setdefault(event.agent_id, []).append(event)
        if isinstance(event, AgentInput):
            self.inputs[run_id_of(event.event_id)] = event
            if event.kind is not None:
                self.kinds.setdefault(event.agent_id, event.kind)
        if isinstance(event, RunOutcome) and event.envelope.run_id is not None:
            self.outcomes[event.envelope.run_id] = event
        if isinstance(event, RunHandedOff):
            self.handed_to.add(event.to_run_id)
        return True

    def finished(self) -> bool:
        """Every run known has ended, its input was read, and so was every event's cause (an
        outcome can be read before events of its run on other topics)."""
        started = {*self.asked, *self.inputs, *self.handed_to}
        return (
            started <= self.outcomes.keys()
            and started <= self.inputs.keys()
            and not self._causes_missing()
        )

    def _causes_missing(self) -> bool:
        return any(
            event.envelope.causation_id is not None and event.envelope.causation_id not in self.seen
            for events in self.timeline.values()
            for event in events
        )

    def kind_of(self, agent_id: str) -> str:
        """As its first input named it; an agent another one started is named after its kind
        (``customer-ana/orders``), one asked without a kind is of the default kind."""
        if agent_id in self.kinds:
            return self.kinds[agent_id]
        return agent_id.rsplit("/", 1)[1] if "/" in agent_id else self.default_kind

    def started_by(self) -> dict[str, list[str]]:
        """The runs each run delegated to or handed off to, by agent id."""
        children: dict[str, list[str]] = {}
        for run_id, given in sorted(self.inputs.items(), key=lambda i: i[1].agent_id):
            if given.origin is not None:
                children.setdefault(given.origin.run_id, []).append(run_id)
        return children

    def runs_in_order(self) -> list[str]:
        """Each question's run, each followed by the runs it started (depth first)."""
        children = self.started_by()
        ordered: list[str] = []
        todo = list(reversed(self.asked))
        while todo:
            run_id = todo.pop()
            ordered.append(run_id)
            todo += reversed(children.get(run_id, []))
        return ordered


def _grant(request: ApprovalRequested, approver: str) -> ApprovalGranted:
    cause = request.envelope
    return ApprovalGranted(
        envelope=Envelope(
            event_id=str(uuid.uuid4()),
            agent_id=cause.agent_id,
            tenant_id=cause.tenant_id,
            run_id=cause.run_id,
            correlation_id=cause.correlation_id,
            causation_id=cause.event_id,
            occurred_at=datetime.now(UTC),
            source="demo",
        ),
        call_id=request.call_id,
        arguments_hash=request.arguments_hash,
        approver=approver,
        comment="approved in the demo",
    )


def _describe_input(given: AgentInput) -> str:
    said = f"“{given.text}”"
    origin = given.origin
    if origin is None:
        return said
    if origin.relation is RunRelation.DELEGATED:
        return f"{said} (asked by {origin.agent_id})"
    handed = len(json.loads(given.context_json or "[]"))
    return f"{said} (handed off by {origin.agent_id}, with {handed} message(s) of its conversation)"


def describe(event: Event) -> str:
    """One human line for an event."""
    kind = type(event).__name__
    details: dict[str, Callable[[Any], str]] = {
        "AgentInput": _describe_input,
        "ModelCallRequested": lambda e: f"step {e.step} → {e.provider}/{e.model}",
        "ModelCallCompleted": lambda e: (
            f"asks for {', '.join(c.tool for c in e.tool_calls)}"
            if e.tool_calls
            else f"answers ({e.usage.total} tokens)"
        ),
        "ToolCallRequested": lambda e: f"{e.tool}({e.arguments_json})",
        "ToolCallCompleted": lambda e: f"{e.tool} → {e.result_json[:80]}",
        "ToolCallFailed": lambda e: f"{e.tool} failed: {e.error_class}",
        "ApprovalRequested": lambda e: f"{e.tool}({e.arguments_json}) needs approval",
        "ApprovalGranted": lambda e: f"granted by {e.approver}",
        "ApprovalDenied": lambda e: f"denied by {e.approver}",
        "TimerSet": lambda e: f"{e.purpose} of call {e.call_id[:8]} due {e.fire_at:%H:%M:%S}",
        "DelegationReturned": lambda e: f"{e.child_agent_id} {e.status}: “{e.output or e.reason}”",
        "RunCompleted": lambda e: f"“{e.output}”",
        "RunFailed": lambda e: f"{e.error_class}: {e.reason}",
        "RunHandedOff": lambda e: f"to {e.to_agent_id}: “{e.note}”",
    }
    render = details.get(kind)
    return f"{kind}: {render(event)}" if render else kind


def run_demo(
    settings: Settings,
    serde: EventSerde,
    console: Console,
    *,
    decide: Callable[[ApprovalRequested], str | None],
    scenario: Scenario = SUPPORT,
    timeout: float = 90.0,
) -> DemoResult:
    """Send the scenario's questions and follow them, and every run they lead to, to their
    outcomes. ``decide`` returns the approver's name to grant an approval, or None to leave it
    to expire."""
    catalog = load_catalog([scenario.spec])
    result = DemoResult(default_kind=catalog.default.newest.name)
    show = _row_printer(console, scenario, catalog, result)
    roots = {agent for agent, _ in scenario.questions}
    consumer = _reader_at_end(settings)
    with AgentStreamProducer(settings, serde) as producer:
        for agent_id, text in scenario.questions:
            question = new_input(
                agent_id, text, tenant_id="demo", source="demo", kind=scenario.kind
            )
            result.asked.append(run_id_of(question.event_id))
            producer.send(question)
        deadline = time.monotonic() + timeout
        try:
            while not result.finished():
                if time.monotonic() > deadline:
                    raise ServiceUnavailableError(
                        f"only {len(result.outcomes)} of the runs the {len(scenario.questions)} "
                        f"questions started ended in {timeout:.0f}s",
                        hint="run with --verbose and check the service logs",
                    )
                event = _next_event(consumer, serde)
                # the agents the questions went to, and those they delegated to or handed off to
                if event is None or event.agent_id.split("/")[0] not in roots:
                    continue
                if not result.record(event):
                    continue
                show(event)
                if isinstance(event, ApprovalRequested):
                    approver = decide(event)
                    result.approvals.append((event, approver or "(expired)"))
                    if approver:
                        producer.send(_grant(event, approver))
        finally:
            consumer.close()
    return result


def _next_event(consumer: Consumer, serde: EventSerde) -> Event | None:
    msg = consumer.poll(0.2)
    if msg is None or msg.error() is not None:
        return None
    event = serde.decode(msg.topic() or "", msg.value())
    return event if isinstance(event, Event) else None


def _row_printer(
    console: Console, scenario: Scenario, catalog: Catalog, result: DemoResult
) -> Callable[[Event], None]:
    """Prints an event as one row: time, agent, its kind, what happened; the columns as wide as
    the longest agent id and kind the scenario can show."""
    targets = {t.target for s in catalog.specs for t in s.tools if t.target is not None}
    agents = [a for a, _ in scenario.questions]
    agent_width = max(len(a) for a in [*agents, *(f"{a}/{t}" for a in agents for t in targets)])
    kind_width = max(len(k) for k in catalog.names)

    def show(event: Event) -> None:
        stamp = event.envelope.occurred_at.strftime("%H:%M:%S.%f")[:-3]
        agent = event.agent_id
        console.print(
            f"[dim]{stamp}[/dim] [cyan]{agent:<{agent_width}}[/cyan] "
            f"[magenta]{result.kind_of(agent):<{kind_width}}[/magenta] {escape(describe(event))}"
        )

    return show


def _reader_at_end(settings: Settings) -> Consumer:
    """A reader positioned at the current end of every watched topic before anything is sent:
    no group join to wait for, so events are shown as they happen."""
    consumer = Consumer(
        # Events shown as they happen, not in half-second lumps.
        reader_config(settings, "demo", eof=False, fetch_wait_ms=20)
    )
    metadata = consumer.list_topics(timeout=10)
    positions = []
    for spec in _WATCHED:
        topic = settings.topic(spec.name)
        for partition in metadata.topics[topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            positions.append(TopicPartition(topic, partition, high))
    consumer.assign(positions)
    return consumer


def causal_order(events: list[Event]) -> list[Event]:
    """By time, and each event after the one that caused it (they may share a timestamp)."""
    waiting = sorted(events, key=lambda e: e.envelope.occurred_at)
    ordered: list[Event] = []
    while waiting:
        pending = {e.event_id for e in waiting}
        ready = next((e for e in waiting if e.envelope.causation_id not in pending), waiting[0])
        waiting.remove(ready)
        ordered.append(ready)
    return ordered


_OUTCOME_LABELS: dict[type[Event], str] = {
    RunCompleted: "[green]completed[/green]",
    RunFailed: "[red]failed[/red]",
    RunCancelled: "[red]cancelled[/red]",
    RunHandedOff: "[yellow]handed_off[/yellow]",
}


def _answer(outcome: RunOutcome) -> str:
    if isinstance(outcome, RunCompleted):
        return outcome.output
    if isinstance(outcome, RunHandedOff):
        return f"→ {outcome.to_agent_id}: {outcome.note}"
    return outcome.reason


#: the terminal width from which the outcomes table has room for the questions and answers
_TEXT_COLUMNS_FROM = 110


def outcome_table(result: DemoResult, width: int = 200) -> Table:
    """Every run: each question's, followed by those it delegated to or handed off to. On a
    terminal narrower than ``width`` the texts are left out (the events above and the trees
    below show them), so what is left stays readable."""
    table = Table(title="outcomes")
    texts = width >= _TEXT_COLUMNS_FROM
    for column in ("agent", "kind", "input", "outcome", "steps", "tools", "tokens", "answer"):
        if column in ("input", "answer"):
            if texts:
                table.add_column(column, ratio=1)
        else:
            table.add_column(column, no_wrap=True)
    for run_id in result.runs_in_order():
        given = result.inputs[run_id]
        outcome = result.outcomes[run_id]
        cells = [
            given.agent_id,
            result.kind_of(given.agent_id),
            escape(given.text),
            _OUTCOME_LABELS[type(outcome)],
            str(outcome.steps),
            str(outcome.tool_calls),
            str(outcome.usage.total),
            escape(_answer(outcome)),
        ]
        table.add_row(*(cells if texts else [c for i, c in enumerate(cells) if i not in (2, 7)]))
    return table


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ended(outcome: RunOutcome) -> str:
    steps = f"{outcome.steps} step{'s' if outcome.steps != 1 else ''}"
    if isinstance(outcome, RunCompleted):
        return f"completed in {steps}: “{_short(outcome.output)}”"
    if isinstance(outcome, RunHandedOff):
        return f"handed_off after {steps}"
    return f"{type(outcome).__name__}: {_short(outcome.reason)}"


def _run_label(run_id: str, result: DemoResult) -> str:
    given = result.inputs[run_id]
    relation = {
        None: "",
        RunRelation.DELEGATED: "delegated to ",
        RunRelation.HANDED_OFF: "handed off to ",
    }[given.origin.relation if given.origin else None]
    agent = given.agent_id
    ended = _ended(result.outcomes[run_id])
    return escape(f"{relation}{agent} ({result.kind_of(agent)}) — {ended}")


def conversation_trees(result: DemoResult) -> list[Tree]:
    """Each question's conversation: its run, the runs it asked (delegated to) and the run it
    handed off to, from the runs' inputs (each names the run that started it)."""
    children = result.started_by()
    trees = []
    for root in result.asked:
        given = result.inputs[root]
        tree = Tree(escape(f"conversation of {given.agent_id}: “{given.text}”"))
        todo = [(tree, root)]
        while todo:
            parent, run_id = todo.pop(0)
            node = parent.add(_run_label(run_id, result))
            todo += [(node, child) for child in children.get(run_id, [])]
        trees.append(tree)
    return trees


def memory_note(result: DemoResult) -> str:
    """What the follow-up's first model call was given: the earlier turns it remembered."""
    follow_up = result.inputs[result.asked[-1]]
    agent_id, question = follow_up.agent_id, follow_up.text
    for event in result.timeline.get(agent_id, []):
        if (
            isinstance(event, ModelCallRequested)
            and event.step == 1
            and event.envelope.correlation_id == follow_up.event_id
        ):
            earlier = json.loads(event.messages_json)[:-1]
            said = " / ".join(f"{m['role']}: {(m['content'] or '')[:60]}" for m in earlier)
            return (
                f"memory: {agent_id}'s follow-up “{question}” reached the model after "
                f"{len(earlier)} remembered message(s) ({said})\n"
            )
    return f"memory: the follow-up of {agent_id} was not seen\n"


def timeline_table(agent_id: str, events: list[Event]) -> Table:
    table = Table(title=f"audit timeline of {agent_id}")
    for column in ("time", "event", "source", "event id"):
        table.add_column(column)
    for event in causal_order(events):
        table.add_row(
            event.envelope.occurred_at.strftime("%H:%M:%S.%f")[:-3],
            escape(describe(event)),
            event.envelope.source,
            event.event_id[:8],
        )
    return table
