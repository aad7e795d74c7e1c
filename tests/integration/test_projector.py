"""The projector service on the real broker and PostgreSQL: following the processor, point in
time, SIGKILLs, a PostgreSQL outage, and records that cannot be projected."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from builders import T0, agent_input
from harness import FakeWorkers, ServiceProcess, read_to_end
from histories import Placed, histories
from projection_support import (
    KEPT,
    ControlWorld,
    TeamWorld,
    agent_text,
    assert_no_trace,
    assert_row_matches_state,
    checksums,
    fresh_schema,
    produce,
    secret_spellings,
    snapshot,
    wait_caught_up,
)
from world import respond, result_envelope, support_spec

from agentstream.projections.database import connect
from agentstream.projections.projector import PROJECTED_TOPICS
from agentstream.projections.queries import (
    agent_state_at,
    conversation_tree,
    get_agent,
    pending_approvals,
    projection_position,
    runs_by_status,
)
from agentstream.projections.rebuild import rebuild
from agentstream.schemas.events import (
    ApprovalGranted,
    ApprovalRequested,
    DeadLetter,
    Event,
    RunCompleted,
    ToolCallCompleted,
)
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import APPROVAL_REQUESTS, DLQ, ensure_topics
from agentstream.tools.devstack.stack_postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration
PROCESSOR = ["processor", "run", "--spec", "world:support_spec", "--batch-size", "500"]


@pytest.fixture
def isolated(settings: Settings) -> Settings:
    isolated = settings.model_copy(update={"topic_prefix": f"pj{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    return isolated


def projector(schema: str, *extra: str) -> list[str]:
    group = f"projector-{schema}"
    return [
        "projections",
        "run",
        "--schema",
        schema,
        "--group",
        group,
        "--max-backoff",
        "2",
        *extra,
    ]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stored_event_ids(database_url: str, schema: str) -> list[str]:
    with connect(database_url, schema) as conn:
        return [str(r[0]) for r in conn.execute("SELECT event_id FROM agent_events").fetchall()]


def topic_event_ids(settings: Settings) -> list[str]:
    records = read_to_end(settings, list(PROJECTED_TOPICS))
    ids = []
    for _, record in records:
        assert isinstance(record, Event)
        ids.append(record.envelope.event_id)
    return ids


class Flow:
    """Produces events in a background thread at a steady pace, in slices."""

    def __init__(self, settings: Settings, placed: list[Placed], seconds: float) -> None:
        self.settings = settings
        self.placed = placed
        self.seconds = seconds
        self.sent = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="flow")

    def _run(self) -> None:
        try:
            slices = 40
            size = len(self.placed) // slices + 1
            with AgentStreamProducer(self.settings) as producer:
                for start in range(0, len(self.placed), size):
                    for item in self.placed[start : start + size]:
                        producer.send_async(item.event)
                    producer.flush()
                    self.sent = min(len(self.placed), start + size)
                    time.sleep(self.seconds / slices)
        except BaseException as exc:
            self.error = exc

    def start(self) -> Flow:
        self._thread.start()
        return self

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> None:
        self._thread.join(120)
        if self.error is not None:
            raise self.error


def with_redeliveries(placed: list[Placed], count: int, seed: int) -> list[Placed]:
    """The stream a crashing processor writes: some outputs again, identical, later on."""
    rng = random.Random(seed)
    outputs = [p for p in placed if type(p.event).__name__.endswith(("Requested", "Completed"))]
    again = rng.sample(outputs, count)
    middle = len(placed) // 2
    return [*placed[:middle], *again[: count // 2], *placed[middle:], *again[count // 2 :]]


# -- following the processor, and point in time -----------------------------------------------


def hold_approvals(request: Event) -> Event | None:
    return None if isinstance(request, ApprovalRequested) else respond(request)


def test_the_projection_follows_the_processor_and_its_past_can_be_folded_again(
    isolated: Settings, schema: str, database_url: str, tmp_path: Path
) -> None:
    agents = [f"agent-{i:03d}" for i in range(40)]
    spec = support_spec()
    with (
        FakeWorkers(isolated, respond=hold_approvals),
        ServiceProcess(PROCESSOR, isolated, tmp_path, "processor") as processor,
        ServiceProcess(projector(schema), isolated, tmp_path, "projector") as service,
    ):
        service.wait_for_log("projector_started")
        with AgentStreamProducer(isolated) as producer:
            for i, agent in enumerate(agents):
                producer.send_async(agent_input(agent, "refund please" if i % 2 else "where is it"))

        def settled() -> bool:
            with connect(database_url, schema) as conn:
                done = len(runs_by_status(conn, "completed", limit=1000))
                return done == 20 and len(pending_approvals(conn, limit=1000)) == 20

        wait_until(settled, 90, "20 completed runs and 20 pending approvals")
        wait_caught_up(isolated, database_url, schema)
        first = snapshot(database_url, schema, agents)

        requests = [r for _, r in read_to_end(isolated, [APPROVAL_REQUESTS])]
        with AgentStreamProducer(isolated) as producer:
            for request in requests:
                assert isinstance(request, ApprovalRequested)
                decision = ApprovalGranted(
                    envelope=result_envelope(request, "grant", delay_ms=60_000, source="cli"),
                    call_id=request.call_id,
                    arguments_hash=request.arguments_hash,
                    approver="carol",
                )
                producer.send_async(decision)

        def all_done() -> bool:
            with connect(database_url, schema) as conn:
                return len(runs_by_status(conn, "completed", limit=1000)) == 40

        wait_until(all_done, 90, "every run to complete")
        wait_caught_up(isolated, database_url, schema)
        second = snapshot(database_url, schema, agents)

        # rebuilt and swapped in under the running projector, which carries on with new tables
        report = rebuild(isolated, schema=schema)
        assert report.equal and report.swapped, report.differing()
        with AgentStreamProducer(isolated) as producer:
            producer.send(agent_input("agent-late", "where is it"))

        def late_done() -> bool:
            with connect(database_url, schema) as conn:
                return len(runs_by_status(conn, "completed", agent_id="agent-late")) == 1

        wait_until(late_done, 60, "a run after the swap")
        assert service.terminate() == 0, service.log_tail()
        assert processor.terminate() == 0, processor.log_tail()

    assert {r.status for r in first.agents.values()} == {"idle", "awaiting_approval"}
    assert {r.status for r in second.agents.values()} == {"idle"}
    with connect(database_url, schema) as conn:
        for agent in agents:
            earlier = agent_state_at(conn, agent, spec, position=first.position)
            assert_row_matches_state(first.agents[agent], earlier)
            by_time = agent_state_at(conn, agent, spec, at=T0 + timedelta(seconds=30))
            assert_row_matches_state(first.agents[agent], by_time)
            later = agent_state_at(conn, agent, spec, position=second.position)
            assert_row_matches_state(second.agents[agent], later)
        approvals = conn.execute("SELECT status, approver, count(*) FROM approvals GROUP BY 1, 2")
        assert approvals.fetchall() == [("granted", "carol", 20)]
        calls = conn.execute("SELECT status, count(*) FROM tool_calls GROUP BY 1")
        assert calls.fetchall() == [("completed", 61)]  # one more run after the swap
        texts = conn.execute("SELECT count(*) FROM runs WHERE input_text IS NOT NULL").fetchone()
        assert texts == (41,)


# -- crashes and outages -----------------------------------------------------------------------


def check_exactly_once(settings: Settings, database_url: str, schema: str) -> None:
    stored = stored_event_ids(database_url, schema)
    on_topics = topic_event_ids(settings)
    assert len(on_topics) > len(set(on_topics)), "the stream holds re-delivered events"
    assert len(stored) == len(set(stored)) == len(set(on_topics))
    assert set(stored) == set(on_topics)


def check_equals_rebuild(settings: Settings, database_url: str, schema: str) -> None:
    report = rebuild(settings.model_copy(update={"database_url": database_url}), schema=schema)
    assert report.comparable, report.live_behind
    assert report.equal, f"live tables differ from a rebuild in {report.differing()}"
    assert report.swapped


def test_a_projector_killed_at_random_moments_loses_and_repeats_nothing(
    isolated: Settings, schema: str, database_url: str, tmp_path: Path
) -> None:
    placed = with_redeliveries(histories(1100, partitions=isolated.partitions), 300, seed=3)
    rng = random.Random(17)
    kills = 0
    with ServiceProcess(
        projector(schema, "--batch-size", "2000"), isolated, tmp_path, "p"
    ) as service:
        flow = Flow(isolated, placed, seconds=10).start()
        while kills < 3:
            # each incarnation dies at a random moment once it consumes
            service.wait_for_log("partitions_assigned")
            time.sleep(rng.uniform(0.2, 2.0))
            service.kill()
            kills += 1
            # A new consumer group each time: positions come from PostgreSQL, never from Kafka,
            # and a fresh group need not wait for the dead member's session to expire.
            service.args = projector(
                schema, "--batch-size", "2000", "--group", f"k{kills}-{schema}"
            )
            service.start()
        flow.join()
        service.wait_for_log("partitions_assigned")
        wait_caught_up(isolated, database_url, schema)
        assert service.terminate() == 0, service.log_tail()
    check_exactly_once(isolated, database_url, schema)
    # the rebuild command: from the topics into a shadow schema, compared, swapped in
    before = checksums(database_url, schema)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "agentstream"), "projections", "rebuild"],
        env={
            **ServiceProcess([], isolated, tmp_path, "cli").env(),
            "AGENTSTREAM_PROJECTION_SCHEMA": schema,
        },
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "check passed: the live tables equal the rebuild" in done.stdout, done.stdout
    assert f"swapped: schema {schema} now holds the rebuild" in done.stdout
    assert "events/s" in done.stderr  # the progress bar and its rate
    assert checksums(database_url, schema) == before
    print(f"\nprojector kill test: {kills} SIGKILLs, {len(placed)} records, every event once")


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    workdir = Path(tempfile.mkdtemp(prefix="agentstream-outage-"))
    workdir.chmod(0o755)
    postgres = EmbeddedPostgres(workdir)
    try:
        postgres.start()
        yield postgres
    finally:
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_postgresql_outage_pauses_the_projector_without_loss(
    isolated: Settings, own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    database_url = own_postgres.url
    schema = fresh_schema(database_url)
    settings = isolated.model_copy(update={"database_url": database_url})
    placed = with_redeliveries(histories(1500, partitions=settings.partitions), 200, seed=5)
    with ServiceProcess(projector(schema), settings, tmp_path, "projector") as service:
        flow = Flow(settings, placed, seconds=14).start()

        def projecting() -> bool:
            with connect(database_url, schema) as conn:
                return sum(projection_position(conn).values()) > 0

        wait_until(projecting, 30, "the first committed batch")
        own_postgres.stop()
        stopped, sent_before = time.monotonic(), flow.sent
        time.sleep(10)
        sent_during = flow.sent - sent_before
        own_postgres.start()
        flow.join()
        wait_caught_up(settings, database_url, schema)
        log = service.log_tail(10**6)
        assert service.terminate() == 0, service.log_tail()
    assert sent_during > 0, "events must keep flowing during the outage"
    assert time.monotonic() - stopped > 10
    assert "projector_paused" in log and "projector_recovered" in log, log[-3000:]
    check_exactly_once(settings, database_url, schema)
    check_equals_rebuild(settings, database_url, schema)


# -- records that cannot be projected ----------------------------------------------------------


def test_bad_records_go_to_the_dlq_and_the_rest_is_projected(
    isolated: Settings, schema: str, database_url: str, tmp_path: Path
) -> None:
    good = histories(20, partitions=isolated.partitions)
    # PostgreSQL's jsonb refuses a lone surrogate, which Python's JSON accepts
    unwritable = ToolCallCompleted(
        envelope=result_envelope(good[1].event, "bad"),
        call_id="bad-call",
        tool="lookup_order",
        result_json='{"s": "\\ud800"}',
    )
    with ServiceProcess(projector(schema), isolated, tmp_path, "projector") as service:
        service.wait_for_log("partitions_assigned")
        produce(isolated, good[:100])
        with AgentStreamProducer(isolated) as producer:
            # On the outcomes topic only the projector reads what it cannot project; on the
            # inputs topic the processor dead-letters it, and the projector leaves it to it.
            outcomes = isolated.topic("agent.outcomes")
            producer.produce_raw(outcomes, b"agent-x", b"\x00\x00\x0f\x12\x06garbage")
            outcome = next(p.event for p in good if isinstance(p.event, RunCompleted))
            producer.produce_raw(outcomes, b"agent-z", producer.encode(outcome, outcomes))
            inputs = isolated.topic("agent.inputs")
            producer.produce_raw(inputs, b"agent-x", b"\x00\x00\x0f\x12\x06garbage")
            mismatched = agent_input("agent-y")
            producer.produce_raw(inputs, b"agent-z", producer.encode(mismatched, inputs))
            producer.send_async(unwritable)
            producer.flush()
        produce(isolated, good[100:])
        wait_caught_up(isolated, database_url, schema)
        assert service.alive()
        assert service.terminate() == 0, service.log_tail()
    letters = [r for _, r in read_to_end(isolated, [DLQ])]
    assert all(isinstance(letter, DeadLetter) for letter in letters)
    by_class = {letter.error_class: letter for letter in letters if isinstance(letter, DeadLetter)}
    assert set(by_class) == {"unknown_schema_id", "key_mismatch", "unwritable"}, by_class
    assert "surrogate" in by_class["unwritable"].reason
    assert by_class["unwritable"].event_id == unwritable.envelope.event_id
    assert all(letter.source == "projector" for letter in by_class.values())
    assert not any(letter.original_topic == isolated.topic("agent.inputs") for letter in letters)
    assert sorted(stored_event_ids(database_url, schema)) == sorted(
        p.event.envelope.event_id for p in good
    )


# -- memory and run control --------------------------------------------------------------------


def test_memory_run_control_and_conversations_are_projected_and_survive_a_rebuild(
    isolated: Settings, schema: str, database_url: str, tmp_path: Path
) -> None:
    world = ControlWorld.make(uuid.uuid4().hex[:6])
    team = TeamWorld.make(uuid.uuid4().hex[:6])
    with ServiceProcess(projector(schema), isolated, tmp_path, "projector") as service:
        service.wait_for_log("partitions_assigned")
        produce(isolated, world.placed(world.before))
        wait_caught_up(isolated, database_url, schema)
        before = agent_text(database_url, schema, world.remembers)
        assert all(spelling in before for spelling in secret_spellings())
        produce(isolated, world.placed(world.erase))
        wait_caught_up(isolated, database_url, schema)
        # other agents, apart from the erasure: what reaches the projector after an erasure
        # keeps the text it quotes (see projections/README.md), and these quote nothing of it
        produce(isolated, team.placed())
        wait_caught_up(isolated, database_url, schema)
        live = {agent: agent_text(database_url, schema, agent) for agent in world.agents}
        # the rebuild replays the topics, which still hold the fact, interleaved as it reads them
        report = rebuild(isolated, schema=schema)
        assert report.equal and report.swapped, report.differing()
        assert service.terminate() == 0, service.log_tail()
    assert_no_trace(live[world.remembers])
    assert KEPT in live[world.remembers]
    assert_no_trace(agent_text(database_url, schema, world.remembers))
    with connect(database_url, schema) as conn:
        for agent in world.agents:
            row = get_agent(conn, agent)
            assert row is not None
            assert_row_matches_state(row, world.states[agent])
        [cancelled] = runs_by_status(conn, "cancelled")
        assert (cancelled.agent_id, cancelled.cancelled_by) == (world.cancelled, "ops")
        closed = conn.execute(
            "SELECT status FROM approvals WHERE agent_id = %s", (world.cancelled,)
        )
        assert closed.fetchall() == [("closed",)]
        erased = conn.execute(
            "SELECT payload->>'key', payload->>'requested_by' FROM agent_events "
            "WHERE type = 'MemoryErased'"
        )
        assert erased.fetchall() == [("allergy", "dpo")]
        for agent in team.agents:
            row = get_agent(conn, agent)
            assert row is not None
            assert_row_matches_state(row, team.states[agent])
            assert row.kind == team.states[agent].kind
        trees = [conversation_tree(conn, team.root_run(n)) for n in range(3)]
    lead, held = team.lead, team.held
    shown = [{(r.agent_id, r.status, r.parent_agent_id) for r in tree} for tree in trees]
    assert shown == [
        {
            (lead, "completed", None),
            (f"{lead}/researcher", "completed", lead),
            (f"{lead}/researcher/librarian", "completed", f"{lead}/researcher"),
            (f"{lead}/writer", "completed", lead),
        },
        {(lead, "handed_off", None), (f"{lead}/refunds", "completed", lead)},
        {
            (held, "running", None),
            (f"{held}/researcher", "completed", held),
            (f"{held}/researcher/librarian", "completed", f"{held}/researcher"),
            (f"{held}/writer", "running", held),
        },
    ]
