"""One agent's recorded history, read from the topics: what the processor consumed and what it
emitted. Every agent topic is co-partitioned, so only the agent's partition of each is read."""

from __future__ import annotations

from dataclasses import dataclass, field

from agentstream.processors.core.machine import SOURCE, fold
from agentstream.processors.core.ordering import causal_order
from agentstream.processors.core.spec import AgentSpec, SpecVersions
from agentstream.processors.core.state import AgentState
from agentstream.processors.engine.loop import PROCESSOR_INPUTS
from agentstream.processors.replay.order import Queued, processor_order
from agentstream.schemas.errors import ConfigurationError
from agentstream.schemas.events import Event
from agentstream.streams.admission import Refused, check_clock
from agentstream.streams.replay_reader import OnProgress, TopicReader, partition_of
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import DecodeError, EventSerde
from agentstream.streams.topics import (
    APPROVAL_REQUESTS,
    MODEL_CALLS,
    OUTCOMES,
    TIMERS,
    TOOL_CALLS,
    TopicSpec,
)

__all__ = [
    "PROCESSOR_OUTPUTS",
    "AgentHistory",
    "Recorded",
    "read_history",
]

#: What the processor emits (everything it writes but its state changelog and the DLQ). It also
#: writes to one of its inputs, agent.control: the facts of the ``remember`` tool, which it
#: applies when it reads them back; those records are both an output and an input.
PROCESSOR_OUTPUTS: tuple[TopicSpec, ...] = (
    MODEL_CALLS,
    TOOL_CALLS,
    APPROVAL_REQUESTS,
    OUTCOMES,
    TIMERS,
)


@dataclass(frozen=True)
class Recorded:
    """An event as found on a topic."""

    event: Event
    topic: str  # logical name, e.g. agent.inputs
    partition: int
    offset: int

    @property
    def is_input(self) -> bool:
        return any(self.topic == spec.name for spec in PROCESSOR_INPUTS)


@dataclass
class AgentHistory:
    agent_id: str
    partition: int
    inputs: list[Recorded] = field(default_factory=list)
    outputs: list[Recorded] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.inputs or self.outputs)

    def caused(self) -> dict[str, list[Event]]:
        """Recorded outputs by the id of the input that caused them, each event once (a
        processor re-sends identical events after a crash)."""
        found: dict[str, dict[str, Event]] = {}
        for item in self.outputs:
            env = item.event.envelope
            if env.causation_id is not None:
                found.setdefault(env.causation_id, {}).setdefault(env.event_id, item.event)
        return {cause: list(events.values()) for cause, events in found.items()}

    def applied_order(self, spec: AgentSpec | SpecVersions) -> list[Event]:
        """The inputs in the order the processor applied them (see processors/replay/order.py)."""
        rank = {spec_.name: i for i, spec_ in enumerate(PROCESSOR_INPUTS)}
        streams: dict[str, list[Queued]] = {}
        for item in self.inputs:
            queued = Queued(item.event.envelope.occurred_at, rank[item.topic], item.event)
            streams.setdefault(item.topic, []).append(queued)
        caused = {
            cause: frozenset(e.envelope.event_id for e in events)
            for cause, events in self.caused().items()
        }
        return processor_order([streams[t] for t in sorted(streams)], caused, spec)

    def state(self, spec: AgentSpec | SpecVersions) -> AgentState | None:
        """The agent's current state, folded by the processor's own pure state machine."""
        return fold(self.applied_order(spec), spec)

    def timeline(self) -> list[Recorded]:
        """Every event once, in event time (inputs before the outputs they caused)."""
        seen: set[str] = set()
        unique = []
        for item in sorted(
            self.inputs + self.outputs,
            key=lambda r: (r.event.envelope.occurred_at, not r.is_input, r.topic, r.offset),
        ):
            if item.event.envelope.event_id not in seen:
                seen.add(item.event.envelope.event_id)
                unique.append(item)
        return causal_order(
            unique,
            event_id=lambda r: r.event.envelope.event_id,
            cause=lambda r: r.event.envelope.causation_id,
        )


def read_history(
    settings: Settings,
    serde: EventSerde,
    agent_id: str,
    *,
    on_progress: OnProgress | None = None,
    on_plan: OnProgress | None = None,
) -> AgentHistory:
    """Every decodable event of ``agent_id`` on the processor's input and output topics.
    ``on_plan`` receives the number of records to examine before reading starts."""
    specs = (*PROCESSOR_INPUTS, *PROCESSOR_OUTPUTS)
    logical = {settings.topic(spec.name): spec.name for spec in specs}
    with TopicReader(settings) as reader:
        counts = reader.partition_counts(list(logical))
        if len(set(counts.values())) > 1:
            raise ConfigurationError(
                "agent topics are not co-partitioned", hint="run `agentstream topics ensure`"
            )
        partition = partition_of(agent_id, next(iter(counts.values())))
        spans = reader.spans(list(logical), partitions={partition})
        if on_plan is not None:
            on_plan(sum(s.size for s in spans))
        history = AgentHistory(agent_id, partition)
        for msg in reader.read(spans, on_progress=on_progress):
            # a cheap key check first: most records of the partition belong to other agents
            if msg.key() != agent_id.encode():
                continue
            topic = msg.topic() or ""
            try:
                record = serde.decode(topic, msg.value())
            except DecodeError:
                continue  # the services dead-letter it; it never became part of the history
            if not isinstance(record, Event) or record.envelope.agent_id != agent_id:
                continue
            try:
                check_clock(record, msg.timestamp())
            except Refused:
                continue  # the processor dead-lettered it, as above
            item = Recorded(record, logical[topic], msg.partition() or 0, msg.offset() or 0)
            (history.inputs if item.is_input else history.outputs).append(item)
            if item.is_input and record.envelope.source == SOURCE:
                history.outputs.append(item)
    return history
