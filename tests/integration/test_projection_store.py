"""The read models on a real PostgreSQL, fed straight through the projector's writer (no broker):
migrations, order-robust tables, exactly-once counting, refused rows, queries, point in time."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from builders import T0, envelope
from histories import Placed, drive, histories, interleave, make_input
from projection_support import (
    KEPT,
    SECRET,
    TEAM,
    ControlWorld,
    DirectFeed,
    TeamWorld,
    agent_text,
    assert_no_trace,
    assert_row_matches_state,
    checksums,
    drop_schemas,
    fresh_schema,
    secret_spellings,
    snapshot,
)
from world import respond, result_envelope, support_spec

from agentstream.processors.core.state import AgentState
from agentstream.projections.audit import event_from_payload
from agentstream.projections.database import connect
from agentstream.projections.erasure import ERASED
from agentstream.projections.migrate import applied_versions, migrate, migrations
from agentstream.projections.queries import (
    ConversationRun,
    agent_conversations,
    agent_state_at,
    agent_timeline,
    conversation_tree,
    get_agent,
    pending_approvals,
    run_input,
    runs_by_status,
)
from agentstream.projections.writer import Batch, OffsetsMoved, Unwritable
from agentstream.schemas.errors import ConfigurationError
from agentstream.schemas.events import (
    AgentInput,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    Event,
    MemoryErased,
    MemoryRecorded,
    RunCompleted,
    RunFailed,
    RunHandedOff,
    TimerSet,
    ToolCallCompleted,
)
from agentstream.streams.topics import topic_for

pytestmark = pytest.mark.integration


@pytest.fixture
def feed(database_url: str, schema: str) -> Iterator[DirectFeed]:
    feed = DirectFeed(database_url, schema)
    yield feed
    feed.close()


def count(database_url: str, schema: str, query: str) -> object:
    with connect(database_url, schema) as conn:
        row = conn.execute(query).fetchone()
        assert row is not None
        return row[0]


def withhold_approvals(request: Event) -> Event | None:
    return None if isinstance(request, ApprovalRequested) else respond(request)


# -- migrations --------------------------------------------------------------------------------


def test_migrations_apply_in_order_once_and_are_recorded(database_url: str, schema: str) -> None:
    files = [m.name for m in migrations()]
    assert files == sorted(files) and len(files) >= 2
    assert applied_versions(database_url, schema) == [m.version for m in migrations()]
    assert migrate(database_url, schema) == []
    with connect(database_url, schema) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = '0001'")
        conn.commit()
    with pytest.raises(ConfigurationError, match="changed after it was applied"):
        migrate(database_url, schema)


def test_the_read_models_are_on_the_users_search_path(database_url: str) -> None:
    """psql and other tools of the same user find the documented tables unqualified."""
    migrate(database_url)  # the default schema, as dev up and `agentstream db migrate` do
    with psycopg.connect(database_url) as plain:
        row = plain.execute("SELECT count(*) FROM approvals WHERE status = 'pending'").fetchone()
        path = plain.execute("SHOW search_path").fetchone()
    assert row is not None and row[0] >= 0
    assert path is not None and "projections" in str(path[0])


def test_db_migrate_command(database_url: str) -> None:
    schema = "t_cli_migrate"
    drop_schemas(database_url, schema)
    exe = Path(sys.executable).parent / "agentstream"
    env = {"AGENTSTREAM_DATABASE_URL": database_url, "PATH": str(exe.parent)}
    try:
        first = subprocess.run(
            [str(exe), "db", "migrate", "--schema", schema], env=env, capture_output=True, text=True
        )
        assert first.returncode == 0, first.stderr
        assert "applied 0001_audit_log.sql, 0002_read_models.sql" in first.stdout
        again = subprocess.run(
            [str(exe), "db", "migrate", "--schema", schema], env=env, capture_output=True, text=True
        )
        assert "up to date" in again.stdout
    finally:
        drop_schemas(database_url, schema)


def test_the_audit_log_is_append_only(database_url: str, schema: str, feed: DirectFeed) -> None:
    feed.feed(histories(1))
    with connect(database_url, schema) as conn, pytest.raises(psycopg.Error, match="append-only"):
        conn.execute("UPDATE agent_events SET source = 'forged'")
    with connect(database_url, schema) as conn, pytest.raises(psycopg.Error, match="append-only"):
        conn.execute("DELETE FROM agent_events")


# -- the tables --------------------------------------------------------------------------------


def test_tables_do_not_depend_on_batches_or_topic_interleaving(database_url: str) -> None:
    placed = histories(60, runs_per_agent=2)
    sums = []
    for seed, batch_size in ((0, 5000), (1, 37), (2, 1)):
        schema = fresh_schema(database_url)
        feed = DirectFeed(database_url, schema)
        try:
            order = placed if seed == 0 else interleave(placed, seed)
            # one-event batches only for a slice: the point is the boundaries, not the time
            events = order[:300] if batch_size == 1 else order
            feed.feed(events, batch_size)
            if batch_size == 1:
                feed.feed(order[300:], 500)
            sums.append(checksums(database_url, schema))
        finally:
            feed.close()
            drop_schemas(database_url, schema)
    assert sums[0] == sums[1] == sums[2]
    assert sums[0]["agent_events"].rows == len(placed)
    assert sums[0]["runs"].rows == 120 and sums[0]["agents"].rows == 60


def test_every_table_shows_the_runs(database_url: str, schema: str, feed: DirectFeed) -> None:
    placed = histories(30)
    feed.feed(interleave(placed, 4), batch_size=50)
    with connect(database_url, schema) as conn:
        runs = runs_by_status(conn, "completed", limit=1000)
        assert len(runs) == 30
        assert all(r.input_text and r.output and r.duration_ms is not None for r in runs)
        assert all(r.finished_at and r.finished_at >= r.started_at for r in runs)
        assert runs_by_status(conn, "running") == []
        assert conn.execute("SELECT status, count(*) FROM tool_calls GROUP BY 1").fetchall() == [
            ("completed", 40)
        ]
        assert conn.execute(
            "SELECT status, approver, count(*) FROM approvals GROUP BY 1, 2"
        ).fetchall() == [("granted", "alice", 10)]
        agent = get_agent(conn, "agent-00001")
        assert agent is not None
        assert (agent.status, agent.active_run_id, agent.runs_completed) == ("idle", None, 1)
        assert agent.events == sum(1 for p in placed if p.event.agent_id == "agent-00001")


def test_a_redelivered_event_is_stored_and_counted_once(
    database_url: str, schema: str, feed: DirectFeed
) -> None:
    placed = histories(10)
    feed.feed(placed)
    before = checksums(database_url, schema)
    # the processor re-emits identical events after a crash: same ids, new offsets
    again = [p for p in placed if topic_for(type(p.event)).name != "agent.inputs"][:25]
    results = feed.feed(again)
    assert results[0].applied == 0 and results[0].duplicates == 25
    assert checksums(database_url, schema) == before
    assert count(database_url, schema, "SELECT count(*) FROM agent_events") == len(placed)


def test_records_below_the_stored_offsets_are_skipped(database_url: str, feed: DirectFeed) -> None:
    events = feed.sourced(histories(3))
    feed.apply(events)
    positions = {(e.topic, e.partition): e.offset + 1 for e in events}
    again = feed.writer.apply(Batch(events, positions), dict(feed.stored))
    assert (again.skipped, again.applied) == (len(events), 0)
    ahead = {key: offset + 5 for key, offset in feed.stored.items()}
    with pytest.raises(OffsetsMoved) as moved:
        feed.writer.apply(Batch(events[:1], positions), ahead)
    assert moved.value.stored == feed.stored


def test_nul_characters_are_stored_sanitized(
    database_url: str, schema: str, feed: DirectFeed
) -> None:
    event = AgentInput(
        envelope=envelope("agent-nul"), text="before\x00after", metadata={"k": "\x00"}
    )
    feed.feed([Placed(event, "agent.inputs", 0)])
    with connect(database_url, schema) as conn:
        row = conn.execute(
            "SELECT sanitized, payload->>'text' FROM agent_events WHERE agent_id = 'agent-nul'"
        ).fetchone()
    assert row == (True, "before\ufffdafter")


def test_a_row_postgresql_refuses_is_handed_over_and_the_rest_is_written(
    database_url: str, schema: str, feed: DirectFeed
) -> None:
    placed = histories(5)
    run_id = next(p.event.envelope.run_id for p in placed if p.event.envelope.run_id)
    # valid JSON for Python, refused by jsonb: a lone surrogate escape
    bad = ToolCallCompleted(
        envelope=envelope("agent-00000", run_id=run_id),
        call_id="bad-call",
        tool="lookup_order",
        result_json='{"s": "\\ud800"}',
    )
    events = feed.sourced([*placed[:20], Placed(bad, "agent.tool-results", 0), *placed[20:]])
    refused: list[Unwritable] = []
    positions = {(e.topic, e.partition): e.offset + 1 for e in events}
    result = feed.writer.apply(Batch(events, positions), {k: 0 for k in positions}, refused.extend)
    assert [u.event.event.envelope.event_id for u in refused] == [bad.envelope.event_id]
    assert refused[0].error_class == "InvalidTextRepresentation"
    assert "surrogate" in refused[0].reason, refused[0].reason
    assert result.applied == len(placed) and result.unwritable == refused
    assert count(database_url, schema, "SELECT count(*) FROM agent_events") == len(placed)
    assert count(database_url, schema, "SELECT count(*) FROM tool_calls") == 5 + 2 * 1


def test_nothing_commits_when_the_refused_rows_cannot_be_dead_lettered(
    database_url: str, schema: str, feed: DirectFeed
) -> None:
    bad = ToolCallCompleted(
        envelope=envelope("agent-x", run_id="r"),
        call_id="bad",
        tool="t",
        result_json='["\\udfff"]',
    )
    events = feed.sourced(
        [
            Placed(make_input("agent-x", 0, "hi"), "agent.inputs", 0),
            Placed(bad, "agent.tool-results", 0),
        ]
    )
    positions = {(e.topic, e.partition): e.offset + 1 for e in events}

    def broker_down(_refused: list[Unwritable]) -> None:
        raise RuntimeError("DLQ unreachable")

    with pytest.raises(RuntimeError):
        feed.writer.apply(Batch(events, positions), {k: 0 for k in positions}, broker_down)
    assert count(database_url, schema, "SELECT count(*) FROM agent_events") == 0
    stored = "SELECT count(*) FROM projection_offsets WHERE next_offset > 0"
    assert count(database_url, schema, stored) == 0


def test_the_effective_decision_is_the_one_the_state_machine_accepts(
    database_url: str, schema: str, feed: DirectFeed
) -> None:
    events, _ = drive([make_input("agent-e", 0, "refund please")], world=withhold_approvals)
    request = next(e for e in events if isinstance(e, ApprovalRequested))
    wrong_hash = ApprovalGranted(
        envelope=result_envelope(request, "forged", source="cli"),
        call_id=request.call_id,
        arguments_hash="0" * 64,
        approver="mallory",
    )
    too_late = ApprovalGranted(
        envelope=result_envelope(
            request, "late", source="cli", delay_ms=int(timedelta(hours=25).total_seconds() * 1000)
        ),
        call_id=request.call_id,
        arguments_hash=request.arguments_hash,
        approver="bob",
    )
    expiry = ApprovalExpired(
        envelope=envelope(
            "agent-e", run_id=request.envelope.run_id, occurred_at=request.expires_at
        ),
        call_id=request.call_id,
        arguments_hash=request.arguments_hash,
    )
    decisions = [Placed(e, "agent.approval-decisions", 0) for e in (wrong_hash, too_late, expiry)]
    history = [Placed(e, topic_for(type(e)).name, 0) for e in events]
    # decisions projected before the request (another topic) give the same answer
    feed.feed([*decisions, *history], batch_size=2)
    with connect(database_url, schema) as conn:
        approval = conn.execute(
            "SELECT status, approver, decision_event_id FROM approvals WHERE call_id = %s",
            (request.call_id,),
        ).fetchone()
        call = conn.execute(
            "SELECT status, approval FROM tool_calls WHERE call_id = %s", (request.call_id,)
        ).fetchone()
    assert approval == ("expired", None, expiry.envelope.event_id)
    assert call == ("expired", "expired")


@pytest.mark.parametrize("outcome_first", [False, True])
def test_an_approval_whose_run_ended_undecided_is_closed_not_pending(
    database_url: str, schema: str, feed: DirectFeed, outcome_first: bool
) -> None:
    first, state = drive([make_input("agent-c", 0, "refund please")], world=withhold_approvals)
    request = next(e for e in first if isinstance(e, ApprovalRequested))
    # The next input comes after the run's deadline: the run fails, its approval undecided.
    later, _ = drive(
        [make_input("agent-c", 1, "hello?", at_s=2 * 86_400)], world=withhold_approvals, state=state
    )
    failed = next(e for e in later if isinstance(e, RunFailed))
    assert failed.envelope.run_id == request.envelope.run_id
    # A grant after the run ended: recorded, but the state machine never applied it.
    late_grant = ApprovalGranted(
        envelope=result_envelope(failed, "late-grant", source="cli"),
        call_id=request.call_id,
        arguments_hash=request.arguments_hash,
        approver="bob",
    )
    placed = [Placed(e, topic_for(type(e)).name, 0) for e in (*first, *later, late_grant)]
    if outcome_first:  # another topic, projected first: the same answer
        placed.sort(key=lambda p: p.topic != "agent.outcomes")
    feed.feed(placed, batch_size=3)
    with connect(database_url, schema) as conn:
        approval = conn.execute(
            "SELECT status, approver FROM approvals WHERE call_id = %s", (request.call_id,)
        ).fetchone()
        call = conn.execute(
            "SELECT status, approval FROM tool_calls WHERE call_id = %s", (request.call_id,)
        ).fetchone()
        inbox = conn.execute("SELECT count(*) FROM approvals WHERE status = 'pending'").fetchone()
    assert approval == ("closed", None)
    assert call == ("closed", "closed")
    assert inbox == (0,)


# -- queries and point in time -----------------------------------------------------------------


def comparable(state: AgentState | None) -> AgentState | None:
    if state is None:
        return None
    return state.model_copy(update={"recent_event_ids": tuple(sorted(state.recent_event_ids))})


def test_timeline_and_pending_approvals(database_url: str, schema: str, feed: DirectFeed) -> None:
    events, _ = drive([make_input("agent-p", 0, "refund please")], world=withhold_approvals)
    feed.feed([Placed(e, topic_for(type(e)).name, 0) for e in events])
    with connect(database_url, schema) as conn:
        timeline = agent_timeline(conn, "agent-p")
        assert timeline[0].event_id == events[0].envelope.event_id
        assert {t.event_id for t in timeline} == {e.envelope.event_id for e in events}
        assert [t.occurred_at for t in timeline] == sorted(t.occurred_at for t in timeline)
        (pending,) = pending_approvals(conn)
        assert pending.agent_id == "agent-p" and pending.tool == "refund"
        assert pending.arguments == {"order_id": "o-1", "amount_cents": 500}
        agent = get_agent(conn, "agent-p")
        assert agent is not None and agent.status == "awaiting_approval"
        (running,) = runs_by_status(conn, "running", agent_id="agent-p")
        assert running.run_id == agent.active_run_id


def test_state_at_a_point_in_time_equals_what_agents_showed(
    database_url: str, schema: str, feed: DirectFeed
) -> None:
    spec = support_spec()
    agents = [f"agent-{i}" for i in range(6)]
    states: dict[str, AgentState | None] = {}
    phase_one: list[Placed] = []
    for i, agent in enumerate(agents):
        text = "refund please" if i % 2 else "where is my order"
        events, states[agent] = drive([make_input(agent, 0, text)], spec, withhold_approvals)
        phase_one += [Placed(e, topic_for(type(e)).name, i % 3) for e in events]
    feed.feed(interleave(phase_one, 1), batch_size=7)
    first = snapshot(database_url, schema, agents)

    phase_two: list[Placed] = []
    for i, agent in enumerate(agents):
        state = states[agent]
        assert state is not None
        decisions: list[Event] = []
        if state.run is not None:
            for pending in state.run.pending_tools:
                decisions.append(
                    ApprovalGranted(
                        envelope=envelope(
                            agent,
                            run_id=state.run.run_id,
                            correlation_id=state.run.correlation_id,
                            occurred_at=T0 + timedelta(minutes=5),
                        ),
                        call_id=pending.call_id,
                        arguments_hash=pending.arguments_hash,
                        approver="dora",
                    )
                )
        later = make_input(agent, 1, "thanks", at_s=600)
        events, states[agent] = drive([*decisions, later], spec, state=state)
        phase_two += [Placed(e, topic_for(type(e)).name, i % 3) for e in events]
    feed.feed(interleave(phase_two, 2), batch_size=5)
    second = snapshot(database_url, schema, agents)

    with connect(database_url, schema) as conn:
        for agent in agents:
            assert_row_matches_state(
                first.agents[agent], agent_state_at(conn, agent, spec, position=first.position)
            )
            assert_row_matches_state(
                first.agents[agent], agent_state_at(conn, agent, spec, at=T0 + timedelta(minutes=1))
            )
            assert_row_matches_state(
                second.agents[agent], agent_state_at(conn, agent, spec, position=second.position)
            )
            # the same state; only the order of the dedupe window may differ, where the log
            # cannot tell two orders apart (they caused the same outputs)
            assert comparable(agent_state_at(conn, agent, spec)) == comparable(states[agent])
    assert {row.status for row in first.agents.values()} == {"idle", "awaiting_approval"}
    assert {row.runs_completed for row in second.agents.values()} == {2}
    assert {row.status for row in second.agents.values()} == {"idle"}


def test_checksums_tell_a_changed_payload_or_column(
    database_url: str, schema: str, feed: DirectFeed
) -> None:
    feed.feed(histories(3))
    before = checksums(database_url, schema)
    with connect(database_url, schema) as conn:
        # the payload is hashed as jsonb, apart from the rest of the row: a change must show
        conn.execute("ALTER TABLE agent_events DISABLE TRIGGER USER")
        conn.execute(
            "UPDATE agent_events SET payload = payload || '{\"extra\": 1}'"
            " WHERE event_id = (SELECT min(event_id) FROM agent_events)"
        )
        conn.execute("ALTER TABLE agent_events ENABLE TRIGGER USER")
        conn.execute(
            "UPDATE runs SET steps = steps + 1 WHERE run_id = (SELECT min(run_id) FROM runs)"
        )
        conn.commit()
    after = checksums(database_url, schema)
    assert {t for t in before if before[t] != after[t]} == {"agent_events", "runs"}
    assert after["agent_events"].rows == before["agent_events"].rows


# -- memory and run control --------------------------------------------------------------------


def rows_of(
    database_url: str, schema: str, query: str, *params: object
) -> list[tuple[object, ...]]:
    with connect(database_url, schema) as conn:
        return conn.execute(query, params).fetchall()


def test_memory_and_run_control_fold_into_the_read_models(
    database_url: str, schema: str, feed: DirectFeed
) -> None:
    world = ControlWorld.make(uuid.uuid4().hex[:6])
    feed.feed(world.placed(world.before))
    feed.feed(world.placed(world.erase))
    with connect(database_url, schema) as conn:
        for agent in world.agents:
            row = get_agent(conn, agent)
            assert row is not None
            assert_row_matches_state(row, world.states[agent])
            assert row.paused == (agent == world.paused)
            assert row.runs_cancelled == (agent == world.cancelled)
    statuses = dict(rows_of(database_url, schema, "SELECT agent_id, status FROM agents"))
    assert statuses[world.paused] == "paused"
    assert statuses[world.waiting] == "waiting"

    [cancelled] = rows_of(
        database_url,
        schema,
        "SELECT status, cancelled_by, cancel_reason, spec_version FROM runs WHERE agent_id = %s",
        world.cancelled,
    )
    assert cancelled == ("cancelled", "ops", "wrong order", 1)
    assert rows_of(
        database_url,
        schema,
        "SELECT a.status, t.status FROM approvals a JOIN tool_calls t USING (call_id) "
        "WHERE a.agent_id = %s",
        world.cancelled,
    ) == [("closed", "closed")]
    hashes = rows_of(database_url, schema, "SELECT DISTINCT spec_version, spec_hash FROM runs")
    assert hashes == [(1, support_spec().content_hash)]

    waits = rows_of(
        database_url,
        schema,
        "SELECT agent_id, status, callback_id, completed_by FROM waits ORDER BY agent_id",
    )
    assert waits == [
        (world.called, "completed", f"cb-{world.called}", "warehouse"),
        (world.waiting, "waiting", f"cb-{world.waiting}", None),
    ]
    timers = rows_of(database_url, schema, "SELECT purpose, fired_at FROM timers")
    assert timers == [("callback", None), ("callback", None)]

    facts = rows_of(
        database_url, schema, "SELECT agent_id, key, value, recorded_by FROM agent_memory"
    )
    assert facts == [(world.remembers, "city", KEPT, "ops")]


def test_an_erased_fact_leaves_no_trace_in_any_table(
    database_url: str, schema: str, feed: DirectFeed
) -> None:
    world = ControlWorld.make(uuid.uuid4().hex[:6])
    feed.feed(world.placed(world.before))
    before = agent_text(database_url, schema, world.remembers)
    # it was everywhere: raw, in JSON, in JSON nested in JSON (messages, tool results)
    assert all(spelling in before for spelling in secret_spellings())
    outputs = rows_of(
        database_url, schema, "SELECT output FROM runs WHERE agent_id = %s", world.remembers
    )
    assert outputs == [(f"done after 2 tool result(s): refund please, I am {SECRET}",)]

    feed.feed(world.placed(world.erase))
    after = agent_text(database_url, schema, world.remembers)
    assert_no_trace(after)
    assert ERASED in after and KEPT in after
    [(payload, redacted)] = rows_of(
        database_url,
        schema,
        "SELECT payload, redacted FROM agent_events WHERE type = 'MemoryErased'",
    )
    assert isinstance(payload, dict)
    assert (payload["key"], payload["requested_by"], payload["reason"]) == (
        "allergy",
        "dpo",
        "gdpr",
    )
    assert redacted is False
    # the events still read back as events, with the text replaced
    with connect(database_url, schema) as conn:
        timeline = agent_timeline(conn, world.remembers)
    events = [event_from_payload(e.type, e.payload) for e in timeline]
    [recorded] = [e for e in events if isinstance(e, MemoryRecorded) and e.key == "allergy"]
    assert recorded.value == ERASED
    # the other agents were not touched
    assert rows_of(
        database_url, schema, "SELECT DISTINCT agent_id FROM agent_events WHERE redacted"
    ) == [(world.remembers,)]


def test_erasing_every_fact_and_recording_again_in_one_batch(
    database_url: str, schema: str, feed: DirectFeed
) -> None:
    """Record, erase all, record again: the order of the control partition decides, whether the
    events come in one batch or one at a time."""
    agent = f"forgetful-{uuid.uuid4().hex[:6]}"

    def fact(n: int, key: str, value: str) -> Event:
        return MemoryRecorded(
            envelope=envelope(agent, occurred_at=T0 + timedelta(seconds=n)),
            key=key,
            value=value,
            recorded_by="ops",
        )

    erase_all = MemoryErased(
        envelope=envelope(agent, occurred_at=T0 + timedelta(seconds=3)), requested_by="dpo"
    )
    events = [
        fact(0, "a", "first-Qa1"),
        fact(1, "b", "second-Qb2"),
        fact(2, "a", "third-Qa3"),
        erase_all,
        fact(4, "a", "fourth-Qa4"),
    ]
    placed = [Placed(e, topic_for(type(e)).name, 0) for e in events]
    sums = []
    for batch_size in (5000, 1):
        other = fresh_schema(database_url)
        one = DirectFeed(database_url, other)
        try:
            one.feed(placed, batch_size)
            text = agent_text(database_url, other, agent)
            assert "second-Qb2" not in text and "third-Qa3" not in text
            # replaced before the erasure, so no longer a fact: the state machine keeps it too
            assert "first-Qa1" in text
            assert rows_of(database_url, other, "SELECT key, value FROM agent_memory") == [
                ("a", "fourth-Qa4")
            ]
            sums.append(checksums(database_url, other))
        finally:
            one.close()
            drop_schemas(database_url, other)
    assert sums[0] == sums[1]


def test_new_tables_do_not_depend_on_batches_or_topic_interleaving(database_url: str) -> None:
    world = ControlWorld.make(uuid.uuid4().hex[:6])
    placed = world.placed(world.before, partitions=3)
    sums = []
    for seed, batch_size in ((0, 5000), (1, 7), (2, 1)):
        schema = fresh_schema(database_url)
        feed = DirectFeed(database_url, schema)
        try:
            feed.feed(placed if seed == 0 else interleave(placed, seed), batch_size)
            feed.feed(world.placed(world.erase, partitions=3), batch_size)
            assert_no_trace(agent_text(database_url, schema, world.remembers))
            sums.append(checksums(database_url, schema))
        finally:
            feed.close()
            drop_schemas(database_url, schema)
    assert sums[0] == sums[1] == sums[2]


def test_events_replayed_after_their_erasure_are_scrubbed_by_applying_it_again(
    database_url: str, schema: str, feed: DirectFeed
) -> None:
    """What a rebuild does: the control partition (facts, then the erasure) may be replayed
    before the other topics that quote the fact; the erasures are applied again at the end."""
    world = ControlWorld.make(uuid.uuid4().hex[:6])
    control = [e for e in world.before if isinstance(e, MemoryRecorded)]
    rest = [e for e in world.before if not isinstance(e, MemoryRecorded)]
    results = feed.feed(world.placed(control + world.erase))
    feed.feed(world.placed(rest))
    # the live projector's limit: an event it gets after the erasure keeps the text
    assert SECRET in agent_text(database_url, schema, world.remembers)
    erasures = [erasure for result in results for erasure in result.erasures]
    assert [e.agent_id for e in erasures] == [world.remembers]
    feed.writer.redact(erasures)
    assert_no_trace(agent_text(database_url, schema, world.remembers))


# -- conversations across agents ---------------------------------------------------------------


def links(tree: list[ConversationRun]) -> set[tuple[str, str | None, str, str | None, str | None]]:
    """(agent, kind, status, how it was started, by which agent's run) of every run, after
    checking that each parent link names a run of the same conversation."""
    agents = {r.run_id: r.agent_id for r in tree}
    assert all(r.parent_run_id in (None, *agents) for r in tree)
    assert {(r.parent_run_id is None, r.depth == 0) for r in tree} <= {(True, True), (False, False)}
    return {
        (r.agent_id, r.kind, r.status, r.origin_relation, agents.get(r.parent_run_id or ""))
        for r in tree
    }


def test_conversations_across_agents_are_one_tree_query(database_url: str) -> None:
    team = TeamWorld.make(uuid.uuid4().hex[:6])
    placed = team.placed(partitions=3)
    sums = []
    for seed, batch_size in ((0, 5000), (1, 3), (2, 1)):
        schema = fresh_schema(database_url)
        feed = DirectFeed(database_url, schema)
        try:
            feed.feed(placed if seed == 0 else interleave(placed, seed), batch_size)
            sums.append(checksums(database_url, schema))
            if seed == 0:
                check_team_rows(database_url, schema, team)
        finally:
            feed.close()
            drop_schemas(database_url, schema)
    assert sums[0] == sums[1] == sums[2]


def check_team_rows(database_url: str, schema: str, team: TeamWorld) -> None:
    lead, held = team.lead, team.held
    with connect(database_url, schema) as conn:
        for agent in team.agents:
            row = get_agent(conn, agent)
            assert row is not None
            state = team.states[agent]
            assert_row_matches_state(row, state)
            assert (row.kind, row.runs_handed_off) == (state.kind, state.runs_handed_off)
            # the fold at a point in time knows what an agent sent the others
            assert comparable(agent_state_at(conn, agent, TEAM)) == comparable(state)
        # any run of a conversation finds all of it
        [librarian] = runs_by_status(conn, "completed", agent_id=f"{lead}/researcher/librarian")
        first = conversation_tree(conn, librarian.run_id)
        assert conversation_tree(conn, team.root_run(0)) == first
        assert links(first) == {
            (lead, "triage", "completed", None, None),
            (f"{lead}/researcher", "researcher", "completed", "delegated", lead),
            (
                f"{lead}/researcher/librarian",
                "librarian",
                "completed",
                "delegated",
                f"{lead}/researcher",
            ),
            (f"{lead}/writer", "writer", "completed", "delegated", lead),
        }
        # a run whose input named no kind is of its agent's kind
        handed = conversation_tree(conn, team.root_run(1))
        assert links(handed) == {
            (lead, "triage", "handed_off", None, None),
            (f"{lead}/refunds", "refunds", "completed", "handed_off", lead),
        }
        assert links(conversation_tree(conn, team.root_run(2))) == {
            (held, "triage", "running", None, None),
            (f"{held}/researcher", "researcher", "completed", "delegated", held),
            (
                f"{held}/researcher/librarian",
                "librarian",
                "completed",
                "delegated",
                f"{held}/researcher",
            ),
            (f"{held}/writer", "writer", "running", "delegated", held),
        }
        check_tree_numbers(team, first, team.roots[0])
        check_tree_numbers(team, handed, team.roots[1])
        delegating = {r.call_id for r in first if r.origin_relation == "delegated" and r.depth == 1}
        calls = {e.call_id for e in team.events if isinstance(e, TimerSet) and e.agent_id == lead}
        assert delegating == calls
        by_agent = agent_conversations(conn, f"{lead}/researcher/librarian")
        assert list(by_agent.values()) == [first]
        assert sorted(agent_conversations(conn, lead)) == sorted(
            root.envelope.event_id for root in team.roots[:2]
        )
        [off] = runs_by_status(conn, "handed_off")
        assert (off.handoff_kind, off.agent_id) == ("refunds", lead)
        assert run_input(conn, off.run_id) == team.roots[1].envelope.event_id
        timers = conn.execute(
            "SELECT purpose, count(*) FROM timers GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert timers == [("delegation", 6)]
        statuses = dict(conn.execute("SELECT agent_id, status FROM agents").fetchall())
    assert (statuses[held], statuses[f"{held}/writer"]) == ("delegating", "running")


def check_tree_numbers(team: TeamWorld, runs: list[ConversationRun], root: AgentInput) -> None:
    """Tokens, latency, input and conversation of finished runs are what their events say."""
    outcomes = {
        e.envelope.run_id: e for e in team.events if isinstance(e, RunCompleted | RunHandedOff)
    }
    inputs = {e.envelope.event_id: e for e in team.events if isinstance(e, AgentInput)}
    for run in runs:
        outcome = outcomes[run.run_id]
        assert run.tokens == outcome.usage.total > 0
        elapsed = outcome.envelope.occurred_at - outcome.started_at
        assert run.duration_ms == elapsed.total_seconds() * 1000
        assert run.input_event_id is not None
        assert run.input_text == inputs[run.input_event_id].text
        assert run.correlation_id == root.envelope.event_id
