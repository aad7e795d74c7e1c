"""One agent's recorded history, read from the topics: what the processor consumed and what it
emitted. Every agent topic is co-partitioned, so the agent's own records are all on its
partition of each; what it sent other agents (a delegated task, a cancel, a delegated run's
answer) is keyed to them, on their partitions of the input topics, and is found by its cause."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field

from agentstream.processors.core.machine import SOURCE, agent_id_of, fold
from agentstream.processors.core.ordering import causal_order
from agentstream.processors.core.spec import AgentSpec, Catalog, SpecVersions
from agentstream.processors.core.state import AgentState
from agentstream.processors.engine.loop import PROCESSOR_INPUTS
from agentstream.processors.replay.order import Queued, processor_order
from agentstream.schemas.errors import ConfigurationError
from agentstream.schemas.events import (
    AgentInput,
    DelegationReturned,
    Event,
    RunHandedOff,
    RunRelation,
)
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
    topic_for,
)

__all__ = [
    "PROCESSOR_OUTPUTS",
    "AgentHistory",
    "Recorded",
    "feeds_back",
    "gather",
    "read_history",
]

#: What the processor emits (everything it writes but its state changelog and the DLQ). It also
#: writes to its own inputs (see :func:`feeds_back`): those records are both an output of the
#: agent that caused them and an input of the agent they are keyed to.
PROCESSOR_OUTPUTS: tuple[TopicSpec, ...] = (
    MODEL_CALLS,
    TOOL_CALLS,
    APPROVAL_REQUESTS,
    OUTCOMES,
    TIMERS,
)

_INPUT_NAMES = frozenset(spec.name for spec in PROCESSOR_INPUTS)

#: What a history is replayed on: one spec, its versions, or every kind served.
Served = AgentSpec | SpecVersions | Catalog


def feeds_back(event: Event) -> bool:
    """Whether an event the processor emitted is an input too: of another agent (a delegated
    task or handoff, a delegated run's answer, a cancel of a delegated run) or of the agent
    itself (a fact of the ``remember`` tool)."""
    return event.envelope.source == SOURCE and topic_for(type(event)) in PROCESSOR_INPUTS


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

    def applied_order(self, spec: Served) -> list[Event]:
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

    def state(self, spec: Served) -> AgentState | None:
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

    def neighbours(self, kinds: Iterable[str] = ()) -> list[str]:
        """The agents whose keys may hold this agent's outputs: those of ``kinds`` it may
        delegate or hand off to, and those its history names (the runs that answered it, that
        it handed off to, and the one it answers)."""
        found = dict.fromkeys(agent_id_of(self.agent_id, kind) for kind in kinds)
        for item in (*self.inputs, *self.outputs):
            event = item.event
            if isinstance(event, AgentInput) and event.origin and event.origin.reply_agent_id:
                found.setdefault(event.origin.reply_agent_id)
            elif isinstance(event, DelegationReturned):
                found.setdefault(event.child_agent_id)
            elif isinstance(event, RunHandedOff):
                found.setdefault(event.to_agent_id)
        found.pop(self.agent_id, None)
        return list(found)

    def delegated_to(self) -> list[str]:
        """The agents this one's runs delegated to, and those that answered it (a delegated
        run may hand off to another agent, which answers in its place), by id: the records
        were read partition by partition, so their order says nothing."""
        found: set[str] = set()
        for item in self.outputs:
            event = item.event
            if isinstance(event, AgentInput) and event.envelope.agent_id != self.agent_id:
                origin = event.origin
                if origin is not None and origin.relation is RunRelation.DELEGATED:
                    found.add(event.envelope.agent_id)
        for item in self.inputs:
            if isinstance(item.event, DelegationReturned):
                found.add(item.event.child_agent_id)
        return sorted(found)


def gather(
    agent_id: str, partition: int, own: Iterable[Recorded], elsewhere: Iterable[Recorded] = ()
) -> AgentHistory:
    """The history of ``agent_id`` from the records keyed to it (``own``) and records keyed to
    other agents (``elsewhere``). An event the processor wrote to an input topic is this
    agent's output when one of this agent's inputs caused it, wherever it is keyed: event ids
    are unique, so a cause names the one agent that applied it."""
    history = AgentHistory(agent_id, partition)
    for item in own:
        (history.inputs if item.is_input else history.outputs).append(item)
    causes = {item.event.envelope.event_id for item in history.inputs}
    for item in (*history.inputs, *elsewhere):
        if feeds_back(item.event) and item.event.envelope.causation_id in causes:
            history.outputs.append(item)
    return history


def read_history(
    settings: Settings,
    serde: EventSerde,
    agent_id: str,
    *,
    kinds: Collection[str] = (),
    on_progress: OnProgress | None = None,
    on_plan: OnProgress | None = None,
) -> AgentHistory:
    """Every decodable event of ``agent_id`` on the processor's input and output topics, and
    what it sent the agents it works with (``kinds``: those it may delegate or hand off to).
    ``on_plan`` receives the number of records to examine before each of the two reads."""
    logical = {
        settings.topic(spec.name): spec.name for spec in (*PROCESSOR_INPUTS, *PROCESSOR_OUTPUTS)
    }
    progress = _Progress(on_progress, on_plan)
    with TopicReader(settings) as reader:
        partitions = _partition_count(reader, list(logical))
        partition = partition_of(agent_id, partitions)
        own = list(_read_keyed(reader, serde, logical, {agent_id: partition}, progress))
        first = gather(agent_id, partition, own)
        others = {a: partition_of(a, partitions) for a in first.neighbours(kinds)}
        if not others:
            return first
        # what an agent sends another is always one of the other's inputs
        inputs = {t: name for t, name in logical.items() if name in _INPUT_NAMES}
        elsewhere = list(_read_keyed(reader, serde, inputs, others, progress))
    return gather(agent_id, partition, own, elsewhere)


class _Progress:
    """Progress over several reads: counts carry on from one read to the next."""

    def __init__(self, on_progress: OnProgress | None, on_plan: OnProgress | None) -> None:
        self.on_progress = on_progress
        self.on_plan = on_plan
        self.planned = 0
        self.done = 0

    def plan(self, size: int) -> OnProgress:
        self.planned += size
        if self.on_plan is not None:
            self.on_plan(self.planned)
        base = self.done

        def advance(done: int) -> None:
            self.done = base + done
            if self.on_progress is not None:
                self.on_progress(self.done)

        return advance


def _partition_count(reader: TopicReader, topics: list[str]) -> int:
    counts = reader.partition_counts(topics)
    if len(set(counts.values())) > 1:
        raise ConfigurationError(
            "agent topics are not co-partitioned", hint="run `agentstream topics ensure`"
        )
    return next(iter(counts.values()))


def _read_keyed(
    reader: TopicReader,
    serde: EventSerde,
    logical: dict[str, str],
    agents: dict[str, int],
    progress: _Progress,
) -> Iterator[Recorded]:
    """The decodable records of the topics of ``logical`` (physical name -> logical name)
    keyed to one of ``agents`` (agent id -> its partition), as the processor admitted them."""
    keys = {agent.encode(): agent for agent in agents}
    spans = reader.spans(list(logical), partitions=set(agents.values()))
    advance = progress.plan(sum(s.size for s in spans))
    for msg in reader.read(spans, on_progress=advance):
        # a cheap key check first: most records of a partition belong to other agents
        agent = keys.get(msg.key() or b"")
        if agent is None:
            continue
        topic = msg.topic() or ""
        try:
            record = serde.decode(topic, msg.value())
        except DecodeError:
            continue  # the services dead-letter it; it never became part of the history
        if not isinstance(record, Event) or record.envelope.agent_id != agent:
            continue
        try:
            check_clock(record, msg.timestamp())
        except Refused:
            continue  # the processor dead-lettered it, as above
        yield Recorded(record, logical[topic], msg.partition() or 0, msg.offset() or 0)
