"""The demo: the whole product on the embedded stack, in one command.

It starts the broker, the registry and PostgreSQL, then the processor, the tool and model
workers, the approval timer and the projector; sends four questions to the sample support agent
(scripted model, three tools, refunds gated by a person), the last a follow-up that only makes
sense with the first run's answer in memory; shows each event as it happens;
approves the refund (or asks, with ``--interactive``); prints the outcomes and one agent's audit
timeline; and stops everything.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from agentstream.schemas.errors import ServiceUnavailableError
from agentstream.schemas.events import (
    ApprovalGranted,
    ApprovalRequested,
    Envelope,
    Event,
    ModelCallRequested,
    RunCompleted,
    RunFailed,
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
_WATCHED = [t for t in TOPICS if t.name not in ("agent.state", "agent.dlq")]


@dataclass
class DemoResult:
    #: each question's outcome, by the id of its input (its runs' correlation id)
    outcomes: dict[str, Event] = field(default_factory=dict)
    questions: dict[str, tuple[str, str]] = field(default_factory=dict)
    timeline: dict[str, list[Event]] = field(default_factory=dict)
    approvals: list[tuple[ApprovalRequested, str]] = field(default_factory=list)


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


def describe(event: Event) -> str:
    """One human line for an event."""
    kind = type(event).__name__
    details = {
        "AgentInput": lambda e: f"“{e.text}”",
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
        "RunCompleted": lambda e: f"“{e.output}”",
        "RunFailed": lambda e: f"{e.error_class}: {e.reason}",
    }
    render: Callable[[Event], str] | None = details.get(kind)
    return f"{kind}: {render(event)}" if render else kind


def run_demo(
    settings: Settings,
    serde: EventSerde,
    console: Console,
    *,
    decide: Callable[[ApprovalRequested], str | None],
    timeout: float = 90.0,
) -> DemoResult:
    """Send the questions and follow them to their outcomes. ``decide`` returns the approver's
    name to grant an approval, or None to leave it to expire."""
    result = DemoResult()
    consumer = _reader_at_end(settings)
    agents = {agent for agent, _ in QUESTIONS}
    seen: set[str] = set()
    with AgentStreamProducer(settings, serde) as producer:
        for agent_id, text in QUESTIONS:
            question = new_input(agent_id, text, tenant_id="demo", source="demo")
            result.questions[question.event_id] = (agent_id, text)
            producer.send(question)
        deadline = time.monotonic() + timeout
        try:
            # An outcome can be read before events of its run on other topics, so read on
            # until every event shown has its cause shown too.
            while set(result.outcomes) != set(result.questions) or _causes_missing(result, seen):
                if time.monotonic() > deadline:
                    raise ServiceUnavailableError(
                        f"only {len(result.outcomes)} of {len(QUESTIONS)} runs ended in "
                        f"{timeout:.0f}s",
                        hint="run with --verbose and check the service logs",
                    )
                msg = consumer.poll(0.2)
                if msg is None or msg.error() is not None:
                    continue
                event = serde.decode(msg.topic() or "", msg.value())
                if not isinstance(event, Event) or event.agent_id not in agents:
                    continue
                if event.event_id in seen:  # a re-sent duplicate
                    continue
                seen.add(event.event_id)
                result.timeline.setdefault(event.agent_id, []).append(event)
                stamp = event.envelope.occurred_at.strftime("%H:%M:%S.%f")[:-3]
                console.print(
                    f"[dim]{stamp}[/dim] [cyan]{event.agent_id:<13}[/cyan] {describe(event)}"
                )
                if isinstance(event, ApprovalRequested):
                    approver = decide(event)
                    result.approvals.append((event, approver or "(expired)"))
                    if approver:
                        producer.send(_grant(event, approver))
                if isinstance(event, RunCompleted | RunFailed):
                    result.outcomes[event.envelope.correlation_id] = event
        finally:
            consumer.close()
    return result


def _causes_missing(result: DemoResult, seen: set[str]) -> bool:
    return any(
        event.envelope.causation_id is not None and event.envelope.causation_id not in seen
        for events in result.timeline.values()
        for event in events
    )


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


def outcome_table(result: DemoResult) -> Table:
    table = Table(title="outcomes")
    for column in ("agent", "question", "outcome", "steps", "tools", "tokens", "answer"):
        table.add_column(column)
    for input_id, (agent_id, question) in result.questions.items():
        outcome = result.outcomes[input_id]
        completed = isinstance(outcome, RunCompleted)
        answer = (
            outcome.output
            if isinstance(outcome, RunCompleted)
            else (outcome.reason if isinstance(outcome, RunFailed) else "")
        )
        steps = getattr(outcome, "steps", 0)
        tools = getattr(outcome, "tool_calls", 0)
        usage = getattr(outcome, "usage", None)
        table.add_row(
            agent_id,
            question,
            "[green]completed[/green]" if completed else "[red]failed[/red]",
            str(steps),
            str(tools),
            str(usage.total if usage else 0),
            answer,
        )
    return table


def memory_note(result: DemoResult) -> str:
    """What the follow-up's first model call was given: the earlier turns it remembered."""
    follow_up_id, (agent_id, question) = list(result.questions.items())[-1]
    for event in result.timeline.get(agent_id, []):
        if (
            isinstance(event, ModelCallRequested)
            and event.step == 1
            and event.envelope.correlation_id == follow_up_id
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
            describe(event),
            event.envelope.source,
            event.event_id[:8],
        )
    return table
