"""What a chaos or soak run sends: questions to the support agent (and, in a chaos run, to a
team of other kinds: planners that delegate to two agents at once, concierges that hand the
conversation off), a person who decides every approval, operators who steer some agents (facts,
erasures, pauses, cancels), and a few records that are meant for the DLQ."""

from __future__ import annotations

import hashlib
import random
import threading
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Self

from confluent_kafka import Consumer

from agentstream.processors.control import steering
from agentstream.processors.control.approvals import decide
from agentstream.processors.core.machine import run_id_of
from agentstream.processors.core.spec import AgentSpec, ModelSpec, delegate, handoff, tool
from agentstream.schemas.events import (
    AgentInput,
    ApprovalRequested,
    AvroRecord,
    Envelope,
    Event,
)
from agentstream.streams.consumer import group_config
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import DecodeError, EventSerde, registry_client
from agentstream.streams.topics import (
    APPROVAL_REQUESTS,
    INPUTS,
    MODEL_CALLS,
    TOOL_CALLS,
    TopicSpec,
)

#: What the demo's support agent is asked; one in three needs a refund approved by a person.
QUESTIONS = (
    "Where is my order o-1001?",
    "Order o-1003 arrived broken, please refund it.",
    "How do returns work?",
    "Is o-1002 shipped yet?",
    "Please refund o-1001, I changed my mind.",
    "Hello, is anybody there?",
)
APPROVER = "chaos-approver"

#: The team's kinds, served beside the support agent (``--spec`` of the services): a planner
#: asks a researcher and a checker in parallel; a concierge hands its conversation to a
#: researcher. The checker's tool needs an approval, so children wait for the person too.
TEAM_SPEC = "agentstream.tools.harness.chaos_workload:team"
PLANNER, RESEARCHER, CHECKER, CONCIERGE = "planner", "researcher", "checker", "concierge"
PLANS = ("Please plan the spring sale.", "Can you plan a launch party?", "Plan the migration.")
RESEARCH_ASKS = ("I need research on returns.", "Could you do research on shipping?")

#: Which service dead-letters a bad record on each topic: its consumer, once (the projector,
#: which reads them all, leaves them to it).
DEAD_LETTERED_BY = {
    INPUTS.name: frozenset({"processor"}),
    TOOL_CALLS.name: frozenset({"tool_worker"}),
    MODEL_CALLS.name: frozenset({"model_worker"}),
}


@tool(timeout_s=5)
def gather_sources(topic: str) -> dict[str, object]:
    """Sources on a topic."""
    return {"topic": topic, "sources": 3}


@tool(requires_approval=True, timeout_s=5)
def check_claims(topic: str) -> dict[str, object]:
    """Check the claims about a topic; a person approves every check."""
    return {"topic": topic, "claims_ok": True}


def _scripted(kind: str, rules: list[dict[str, object]], answer: str) -> ModelSpec:
    script = {"rules": rules, "answer": answer}
    return ModelSpec(provider="scripted", name=kind, parameters={"script": script})


def _planner() -> AgentSpec:
    when = r"\bplan (?:the |a )?(?P<topic>[\w-]+)"
    # one group: both children are asked in the same reply, and run side by side
    rules: list[dict[str, object]] = [
        {"when": when, "tool": f"ask_{RESEARCHER}", "arguments": {"task": "research {topic}"}},
        {"when": when, "tool": f"ask_{CHECKER}", "arguments": {"task": "check {topic}"}},
    ]
    return AgentSpec(
        name=PLANNER,
        system_prompt="Plan with your team: ask the researcher and the checker at once.",
        model=_scripted(PLANNER, [{**r, "group": "team"} for r in rules], "plan: {summary}"),
        tools=(delegate(RESEARCHER), delegate(CHECKER)),
    )


def _researcher() -> AgentSpec:
    rule: dict[str, object] = {
        "when": r"\bresearch (?:on )?(?P<topic>[\w-]+)",
        "tool": "gather_sources",
        "arguments": {"topic": "{topic}"},
    }
    answer = "researched {topic}: {result.gather_sources.sources} sources"
    return AgentSpec(
        name=RESEARCHER,
        system_prompt="Find sources.",
        model=_scripted(RESEARCHER, [rule], answer),
        tools=(gather_sources,),
    )


def _checker() -> AgentSpec:
    rule: dict[str, object] = {
        "when": r"\bcheck (?P<topic>[\w-]+)",
        "tool": "check_claims",
        "arguments": {"topic": "{topic}"},
    }
    return AgentSpec(
        name=CHECKER,
        system_prompt="Check claims.",
        model=_scripted(CHECKER, [rule], "checked {topic}: {summary}"),
        tools=(check_claims,),
    )


def _concierge() -> AgentSpec:
    rule: dict[str, object] = {
        "when": r"\bresearch on (?P<topic>[\w-]+)",
        "tool": f"handoff_to_{RESEARCHER}",
        "arguments": {"note": "research {topic}"},
    }
    return AgentSpec(
        name=CONCIERGE,
        system_prompt="Greet, then hand research to the researcher.",
        model=_scripted(CONCIERGE, [rule], "Hello! {summary}"),
        tools=(handoff(RESEARCHER),),
    )


def team() -> list[AgentSpec]:
    """The team's kinds (``TEAM_SPEC``)."""
    return [_planner(), _researcher(), _checker(), _concierge()]


def _asked(n: int, run: int, with_team: bool) -> tuple[str, str | None]:
    """What agent ``n`` is asked in its ``run``, and its kind (None: the default kind). Every
    tenth agent plans, every twentieth is a concierge (spread over the steered agents too)."""
    if with_team and n % 10 == 3:
        return PLANS[(n + run) % len(PLANS)], PLANNER
    if with_team and n % 20 == 7:
        return RESEARCH_ASKS[(n + run) % len(RESEARCH_ASKS)], CONCIERGE
    return QUESTIONS[(n + run) % len(QUESTIONS)], None


def questions(
    agents: int, runs_per_agent: int, seed: int, prefix: str = "agent", *, with_team: bool = False
) -> list[AgentInput]:
    """One input per run; an agent's second input waits in its queue for the first run. With
    ``with_team``, some agents are of the team's kinds (served with ``TEAM_SPEC``)."""
    rng = random.Random(seed)
    found = []
    for run in range(runs_per_agent):
        for n in range(agents):
            event_id = str(uuid.UUID(int=rng.getrandbits(128)))
            envelope = Envelope(
                event_id=event_id,
                agent_id=f"{prefix}-{n:05d}",
                tenant_id="chaos",
                correlation_id=event_id,
                occurred_at=datetime.now(UTC),
                source="chaos",
            )
            text, kind = _asked(n, run, with_team)
            found.append(AgentInput(envelope=envelope, text=text, kind=kind))
    return found


def stamped_now(event: AgentInput, at: datetime | None = None) -> AgentInput:
    """The input as sent now (or at ``at``): the workers stamp results with their clock, and a
    run's deadline counts from its input."""
    envelope = event.envelope.model_copy(update={"occurred_at": at or datetime.now(UTC)})
    return event.model_copy(update={"envelope": envelope})


OPERATOR = "chaos-operator"
_CHAOS = {"tenant_id": "chaos", "source": "chaos"}


@dataclass
class Steering:
    """What operators do to some agents during a run, built when sent (stamped then).

    With the first inputs: a fact for every fourth agent, a pause for every sixth. Once every
    run of the other agents has ended (so the processor has read every input): an erasure of
    every eighth agent's fact, a cancel of the last run of every twelfth (all of them paused,
    so that run is still queued), then the resumes. A cancel that still reached the processor
    before the input of its run (the topics are read side by side) would be dead-lettered as
    an unknown run, and the run would complete: both are correct, and the checks accept
    either."""

    agents: list[str]
    last_input: dict[str, str]
    #: the event ids of the cancels sent
    cancels: set[str] = field(default_factory=set)

    @property
    def paused(self) -> list[str]:
        return [agent for i, agent in enumerate(self.agents) if i % 6 == 1]

    @classmethod
    def of(cls, inputs: list[AgentInput]) -> Steering:
        last = {event.envelope.agent_id: event.event_id for event in inputs}
        return cls(sorted(last), last)

    def first(self) -> list[Event]:
        events: list[Event] = []
        for i, agent in enumerate(self.agents):
            if i % 4 == 0:
                events.append(
                    steering.record_memory(
                        agent, "tier", f"gold since {i}", recorded_by=OPERATOR, **_CHAOS
                    )
                )
            if agent in self.paused:
                events.append(steering.pause_agent(agent, requested_by=OPERATOR, **_CHAOS))
        return events

    def last(self) -> list[Event]:
        events: list[Event] = []
        for i, agent in enumerate(self.agents):
            if i % 8 == 0:
                events.append(steering.erase_memory(agent, "tier", requested_by=OPERATOR, **_CHAOS))
            if i % 12 == 1:
                run_id = run_id_of(self.last_input[agent])
                cancel = steering.cancel_run(
                    agent, run_id, reason="chaos", requested_by=OPERATOR, **_CHAOS
                )
                self.cancels.add(cancel.event_id)
                events.append(cancel)
        events += [
            steering.resume_agent(agent, requested_by=OPERATOR, **_CHAOS) for agent in self.paused
        ]
        return events


def denies(call_id: str) -> bool:
    """The auto-approver denies one call in four, the same one every time it is asked."""
    return hashlib.sha256(call_id.encode()).digest()[0] % 4 == 0


class TopicFollower:
    """A background thread that reads one topic from its beginning and hands each record it can
    decode to ``handle``; ``stop`` re-raises what went wrong in the thread."""

    def __init__(self, settings: Settings, topic: TopicSpec, name: str) -> None:
        self.settings = settings
        self.topic = topic
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def handle(self, record: AvroRecord) -> None:
        raise NotImplementedError

    def opened(self) -> AbstractContextManager[object]:
        """What the thread holds open while it reads (nothing by default)."""
        return nullcontext()

    def _run(self) -> None:
        serde = EventSerde(registry_client(self.settings.require_schema_registry_url()))
        consumer = Consumer(
            group_config(self.settings, f"{self._thread.name}-{uuid.uuid4().hex[:8]}")
        )
        consumer.subscribe([self.settings.topic(self.topic.name)])
        try:
            with self.opened():
                while not self._stop.is_set():
                    for msg in consumer.consume(500, 0.2):
                        if msg.error() is not None:
                            continue
                        try:
                            record = serde.decode(msg.topic() or "", msg.value())
                        except DecodeError:
                            continue
                        self.handle(record)
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            consumer.close()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join(30)
        if self.error is not None:
            raise self.error


class AutoApprover(TopicFollower):
    """Decides every approval request as it appears (a person who always answers at once)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, APPROVAL_REQUESTS, "auto-approver")
        self.decided: set[str] = set()
        self._producer: AgentStreamProducer | None = None

    def opened(self) -> AgentStreamProducer:
        self._producer = AgentStreamProducer(self.settings)
        return self._producer

    def handle(self, record: AvroRecord) -> None:
        if not isinstance(record, ApprovalRequested) or self._producer is None:
            return
        if record.call_id in self.decided:
            return  # a restored processor re-sent it; already decided
        approve = not denies(record.call_id)
        self._producer.send(decide(record, approve=approve, approver=APPROVER))
        self.decided.add(record.call_id)


@dataclass(frozen=True)
class BadRecord:
    """A record sent on purpose to a topic; each of its readers must dead-letter it."""

    topic: str
    partition: int
    offset: int
    readers: frozenset[str]


def send_bad_records(
    settings: Settings, producer: AgentStreamProducer, count: int
) -> list[BadRecord]:
    """Garbage bytes, a wrong magic byte and an unknown schema id, spread over the topics that
    the processor, the workers and the projector read."""
    values = (b"\x00\x00\x0f\x12\x06garbage", b"\x07not avro at all", b"\x00\x7f\xff\xff\xfe\x02")
    topics = list(DEAD_LETTERED_BY)
    sent = []
    for n in range(count):
        name = topics[n % len(topics)]
        value = values[n % len(values)]
        delivery = producer.produce_raw(
            settings.topic(name), f"bad-{n:03d}".encode(), value
        ).result(30)
        sent.append(
            BadRecord(delivery.topic, delivery.partition, delivery.offset, DEAD_LETTERED_BY[name])
        )
    return sent
