"""Helpers for the projection tests: schemas of their own, applying histories straight to the
writer, waiting for a projector to catch up with the topics, and snapshots of what it shows."""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta

import psycopg
from builders import T0, envelope
from histories import Placed, drive, make_input
from psycopg import sql
from world import WORLD, respond, result_envelope

from agentstream.processors.core.machine import run_id_of, transition
from agentstream.processors.core.spec import AgentSpec, Catalog, delegate, handoff
from agentstream.processors.core.state import AgentState
from agentstream.processors.testing import ModelReply, ScriptedWorld
from agentstream.projections.audit import SourcedEvent
from agentstream.projections.checksums import TableChecksum, table_checksums
from agentstream.projections.database import connect
from agentstream.projections.migrate import migrate
from agentstream.projections.queries import AgentRow, get_agent, projection_position
from agentstream.projections.writer import ApplyResult, Batch, BatchWriter
from agentstream.schemas.events import (
    AgentInput,
    AgentPaused,
    ApprovalRequested,
    CallbackCompleted,
    DelegationReturned,
    Event,
    MemoryErased,
    MemoryRecorded,
    ModelCallRequested,
    RunCancelRequested,
    ToolCallIntent,
    ToolCallRequested,
    ToolCallWaiting,
)
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import topic_for
from agentstream.tools.harness.chaos_checks import wait_projection_caught_up

Position = dict[tuple[str, int], int]


def fresh_schema(database_url: str) -> str:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    migrate(database_url, schema)
    return schema


def drop_schemas(database_url: str, *schemas: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for schema in schemas:
            for name in (schema, f"{schema}_rebuild", f"{schema}_retired"):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )


def checksums(database_url: str, schema: str) -> dict[str, TableChecksum]:
    with connect(database_url, schema) as conn:
        return table_checksums(conn, schema)


class DirectFeed:
    """Applies events to a schema through the projector's writer, giving them Kafka-like
    positions (each topic partition numbered from 0 in the order events arrive)."""

    def __init__(self, database_url: str, schema: str, prefix: str = "w.") -> None:
        self.writer = BatchWriter(database_url, schema)
        self.prefix = prefix
        self.next: dict[tuple[str, int], int] = {}
        self.stored: dict[tuple[str, int], int] = {}

    def sourced(self, placed: Iterable[Placed]) -> list[SourcedEvent]:
        out = []
        for item in placed:
            key = (self.prefix + item.topic, item.partition)
            offset = self.next.get(key, 0)
            self.next[key] = offset + 1
            out.append(SourcedEvent.of(item.event, key[0], key[1], offset))
        return out

    def apply(self, events: list[SourcedEvent], batch_size: int = 5000) -> list[ApplyResult]:
        results = []
        for start in range(0, len(events), batch_size):
            chunk = events[start : start + batch_size]
            positions: dict[tuple[str, int], int] = {}
            for event in chunk:
                positions[(event.topic, event.partition)] = event.offset + 1
            expected = {key: self.stored.get(key, 0) for key in positions}
            result = self.writer.apply(Batch(chunk, positions), expected)
            self.stored.update(result.positions)
            results.append(result)
        return results

    def feed(self, placed: Iterable[Placed], batch_size: int = 5000) -> list[ApplyResult]:
        return self.apply(self.sourced(placed), batch_size)

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True)
class Snapshot:
    """What the read models showed at one moment, and the offsets they stood at."""

    agents: dict[str, AgentRow]
    position: Position


def snapshot(database_url: str, schema: str, agent_ids: Iterable[str]) -> Snapshot:
    with connect(database_url, schema) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        agents = {}
        for agent_id in agent_ids:
            row = get_agent(conn, agent_id)
            assert row is not None, f"{agent_id} is not projected"
            agents[agent_id] = row
        return Snapshot(agents, projection_position(conn))


def assert_row_matches_state(row: AgentRow, state: AgentState | None) -> None:
    """The agents row shows what the folded state says."""
    assert state is not None, f"{row.agent_id}: no state folded"
    expected = {
        "status": state.status,
        "active_run_id": state.run.run_id if state.run else None,
        "runs_completed": state.runs_completed,
        "runs_failed": state.runs_failed,
        "prompt_tokens": state.usage.prompt_tokens,
        "completion_tokens": state.usage.completion_tokens,
    }
    shown = {key: getattr(row, key) for key in expected}
    assert shown == expected, f"{row.agent_id}: agents row {shown} != folded state {expected}"


def wait_caught_up(settings: Settings, database_url: str, schema: str, timeout: float = 90) -> None:
    """Wait until the projection's offsets reach the end of every topic (twice in a row, so a
    stream still flowing does not count)."""
    at = settings.model_copy(update={"database_url": database_url})
    if not wait_projection_caught_up(at, schema, timeout):
        raise AssertionError(f"the projection of {schema} did not catch up in {timeout}s")


def produce(settings: Settings, placed: Iterable[Placed]) -> int:
    count = 0
    with AgentStreamProducer(settings) as producer:
        for item in placed:
            producer.send_async(item.event)
            count += 1
        producer.flush()
    return count


# -- memory and run control ---------------------------------------------------------------------

#: A fact that will be erased: a quote and a newline, so its JSON spellings differ from it.
SECRET = 'allergic to "Zq7" peanuts\nsevere'
KEPT = "lives in Lisbon-Xy"


def secret_spellings(secret: str = SECRET) -> list[str]:
    """The secret raw, JSON-escaped once and twice: none may remain anywhere."""
    once = json.dumps(secret, ensure_ascii=False)[1:-1]
    twice = json.dumps(once, ensure_ascii=False)[1:-1]
    # a distinctive part of it as well, which every spelling contains
    return [secret, once, twice, "Zq7"]


def _control(event_type: type[Event], agent_id: str, at_s: float, **fields: object) -> Event:
    event_id = str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"control/{agent_id}/{event_type.__name__}/{at_s}")
    )
    env = envelope(agent_id, event_id=event_id, occurred_at=T0 + timedelta(seconds=at_s))
    return event_type.model_validate({"envelope": env, **fields})


def _waiting_world(agent_id: str) -> Callable[[Event], Event | None]:
    """The tests' world, except that its tool calls wait for a callback."""

    def answer(request: Event) -> Event | None:
        if isinstance(request, ToolCallRequested):
            return ToolCallWaiting(
                envelope=result_envelope(request, "wait"),
                call_id=request.call_id,
                tool=request.tool,
                callback_id=f"cb-{agent_id}",
                expires_at=T0 + timedelta(hours=1),
            )
        return respond(request)

    return answer


def _quoting_world(request: Event) -> Event | None:
    """The tests' world, with tools whose results quote the secret (nested JSON downstream)."""
    return replace(WORLD, tool=lambda r: json.dumps({"note": SECRET, "call": r.call_id}))(request)


def _hold_approvals(request: Event) -> Event | None:
    return None if isinstance(request, ApprovalRequested) else respond(request)


@dataclass
class ControlWorld:
    """Histories of five agents that use the new events, before and after an erasure:

    - ``remembers``: two facts; a run whose input, model calls, tool results, approval and
      output quote one of them; then that fact is erased (``erase``, kept apart);
    - ``cancelled``: a run waiting for an approval, cancelled;
    - ``paused``: a completed run, then paused;
    - ``waiting``: a tool call that waits for a callback;
    - ``called``: the same, completed by its callback.
    """

    suffix: str
    before: list[Event] = field(default_factory=list)
    erase: list[Event] = field(default_factory=list)
    states: dict[str, AgentState | None] = field(default_factory=dict)

    @property
    def remembers(self) -> str:
        return f"remembers-{self.suffix}"

    @property
    def cancelled(self) -> str:
        return f"cancelled-{self.suffix}"

    @property
    def paused(self) -> str:
        return f"paused-{self.suffix}"

    @property
    def waiting(self) -> str:
        return f"waiting-{self.suffix}"

    @property
    def called(self) -> str:
        return f"called-{self.suffix}"

    @property
    def agents(self) -> list[str]:
        return [self.remembers, self.cancelled, self.paused, self.waiting, self.called]

    @classmethod
    def make(cls, suffix: str) -> ControlWorld:
        world = cls(suffix)
        world._drive(
            world.remembers,
            [
                _control(
                    MemoryRecorded,
                    world.remembers,
                    0,
                    key="allergy",
                    value=SECRET,
                    recorded_by="ops",
                ),
                _control(
                    MemoryRecorded, world.remembers, 0.5, key="city", value=KEPT, recorded_by="ops"
                ),
                make_input(world.remembers, 0, f"refund please, I am {SECRET}", at_s=1),
            ],
            _quoting_world,
        )
        erased = _control(
            MemoryErased, world.remembers, 600, key="allergy", requested_by="dpo", reason="gdpr"
        )
        world.erase = [erased]
        world._drive(world.remembers, [erased], respond, record=False)
        world._drive(
            world.cancelled, [make_input(world.cancelled, 0, "refund please")], _hold_approvals
        )
        world._drive(
            world.cancelled,
            [
                _control(
                    RunCancelRequested,
                    world.cancelled,
                    30,
                    requested_by="ops",
                    reason="wrong order",
                )
            ],
            _hold_approvals,
        )
        world._drive(world.paused, [make_input(world.paused, 0, "where is my order")], respond)
        world._drive(
            world.paused,
            [_control(AgentPaused, world.paused, 30, requested_by="ops", reason="maintenance")],
            respond,
        )
        world._drive(
            world.waiting,
            [make_input(world.waiting, 0, "where is my order")],
            _waiting_world(world.waiting),
        )
        world._drive(
            world.called,
            [make_input(world.called, 0, "where is my order")],
            _waiting_world(world.called),
        )
        state = world.states[world.called]
        assert state is not None and state.run is not None
        callback = _control(
            CallbackCompleted,
            world.called,
            40,
            callback_id=f"cb-{world.called}",
            result_json='{"status": "shipped"}',
            completed_by="warehouse",
        )
        world._drive(world.called, [callback], respond)
        return world

    def _drive(
        self,
        agent_id: str,
        inputs: list[Event],
        answer: Callable[[Event], Event | None],
        *,
        record: bool = True,
    ) -> None:
        events, state = drive(inputs, world=answer, state=self.states.get(agent_id))
        self.states[agent_id] = state
        if record:
            self.before += events
        else:
            self.erase += events[len(inputs) :]

    def placed(self, events: list[Event], partitions: int = 1) -> list[Placed]:
        return [
            Placed(e, topic_for(type(e)).name, self.agents.index(e.envelope.agent_id) % partitions)
            for e in events
        ]


def agent_text(database_url: str, schema: str, agent_id: str) -> str:
    """Everything every table of ``schema`` holds about ``agent_id``, as text."""
    with connect(database_url, schema) as conn:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT table_name FROM information_schema.columns "
                "WHERE table_schema = %s AND column_name = 'agent_id' ORDER BY 1",
                (schema,),
            ).fetchall()
        ]
        dumped = []
        for table in tables:
            # each column as text on its own: a text column as it is, a JSON one as JSON text
            query = sql.SQL(
                "SELECT c.value FROM {} t, jsonb_each_text(to_jsonb(t)) c "
                "WHERE t.agent_id = %s AND c.value IS NOT NULL"
            ).format(sql.Identifier(table))
            dumped += [str(r[0]) for r in conn.execute(query, (agent_id,)).fetchall()]
    assert {"agent_events", "agents", "runs", "agent_memory"} <= set(tables), tables
    return "\n".join(dumped)


def assert_no_trace(text: str) -> None:
    for spelling in secret_spellings():
        assert spelling not in text, f"{spelling!r} is still there"


# -- conversations across agents ----------------------------------------------------------------


def team_specs() -> list[AgentSpec]:
    """Triage (the default kind) asks a researcher and a writer at once, or hands refunds over;
    the researcher asks a librarian. ``--spec projection_support:team_specs`` serves them."""
    return [
        AgentSpec(
            name="triage",
            tools=(delegate("researcher"), delegate("writer"), handoff("refunds")),
        ),
        AgentSpec(name="researcher", tools=(delegate("librarian"),)),
        AgentSpec(name="writer"),
        AgentSpec(name="librarian"),
        AgentSpec(name="refunds"),
    ]


TEAM = Catalog.of(team_specs())


def _team_model(request: ModelCallRequested) -> ModelReply:
    """First step: a refund is handed to refunds, anything else asks every kind on offer;
    afterwards (or with nothing to ask) the agent answers with what it was told last."""
    messages = json.loads(request.messages_json)
    offered = sorted(t["function"]["name"] for t in json.loads(request.tools_json))
    last = messages[-1]
    if last["role"] == "user" and request.step == 1:
        text = str(last["content"])
        if "refund" in text and "handoff_to_refunds" in offered:
            note = json.dumps({"note": f"wants a refund: {text}"})
            return None, [
                ToolCallIntent(tool_call_id="h", tool="handoff_to_refunds", arguments_json=note)
            ]
        asks = [t for t in offered if t.startswith("ask_")]
        if asks:
            return None, [
                ToolCallIntent(
                    tool_call_id=f"c{n}", tool=t, arguments_json=json.dumps({"task": text})
                )
                for n, t in enumerate(asks)
            ]
    said = " | ".join(str(m["content"]) for m in messages[-2:] if m["role"] != "assistant")
    return (
        f"{request.envelope.agent_id} answers: {said}",
        [],
    )


TEAM_WORLD = ScriptedWorld(
    namespace=uuid.UUID("6b0f9a52-3f2c-4d7e-9a51-0c4e8f1d2a77"),
    model=_team_model,
    tool=lambda request: "{}",
)


@dataclass
class TeamWorld:
    """Conversations across agents, driven through the pure state machine, every agent's
    events in the order its processor would see and emit them:

    - ``lead`` asks a researcher (who asks a librarian) and a writer, then answers (4 runs);
    - ``lead`` again, about a refund: it hands the conversation to refunds (2 runs);
    - ``held`` asks the same, and its writer never gets a model answer: ``held`` is
      delegating, its writer running.
    """

    suffix: str
    events: list[Event] = field(default_factory=list)
    states: dict[str, AgentState] = field(default_factory=dict)
    #: the input that started each conversation
    roots: list[AgentInput] = field(default_factory=list)

    @property
    def lead(self) -> str:
        return f"lead-{self.suffix}"

    @property
    def held(self) -> str:
        return f"held-{self.suffix}"

    @property
    def agents(self) -> list[str]:
        return sorted(self.states)

    @classmethod
    def make(cls, suffix: str) -> TeamWorld:
        world = cls(suffix)
        world._converse(world.lead, "where is order o-1", at_s=0, kind="triage")
        world._converse(world.lead, "refund please, o-1 arrived broken", at_s=60)
        withheld = f"{world.held}/writer"
        world._converse(world.held, "where is order o-2", at_s=120, kind="triage", mute=withheld)
        return world

    def root_run(self, n: int) -> str:
        return run_id_of(self.roots[n].envelope.event_id)

    def _converse(
        self, agent_id: str, text: str, *, at_s: float, kind: str | None = None, mute: str = ""
    ) -> None:
        """Drive one input until nothing is pending; the model never answers ``mute``."""
        event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"team/{agent_id}/{at_s}"))
        env = envelope(agent_id, event_id=event_id, occurred_at=T0 + timedelta(seconds=at_s))
        first = AgentInput(envelope=env, text=text, kind=kind)
        self.roots.append(first)
        self.events.append(first)
        pending: deque[Event] = deque([first])
        while pending:
            event = pending.popleft()
            decision = transition(self.states.get(event.agent_id), event, TEAM)
            self.states[event.agent_id] = decision.state
            for emitted in decision.emits:
                self.events.append(emitted)
                reply = None if emitted.agent_id == mute else TEAM_WORLD(emitted)
                if isinstance(emitted, AgentInput | DelegationReturned | RunCancelRequested):
                    pending.append(emitted)  # another agent's input
                elif reply is not None:
                    self.events.append(reply)
                    pending.append(reply)

    def placed(self, partitions: int = 1) -> list[Placed]:
        """The events on their topics, each agent's on one partition (by its place in
        ``agents``)."""
        agents = self.agents
        return [
            Placed(e, topic_for(type(e)).name, agents.index(e.agent_id) % partitions)
            for e in self.events
        ]
