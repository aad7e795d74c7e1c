"""`agentstream inspect` as a user runs it: from the PostgreSQL read models, and folded from the
topics when there is no database, on the real broker and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import SUPPORT_DIR
from histories import Placed, drive, make_input
from projection_support import (
    KEPT,
    ControlWorld,
    DirectFeed,
    TeamWorld,
    assert_no_trace,
    drop_schemas,
    fresh_schema,
    produce,
)
from world import respond

from agentstream.processors.core.state import AgentState
from agentstream.projections.erasure import ERASED
from agentstream.schemas.events import ApprovalRequested, Event
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import ensure_topics, topic_for

pytestmark = pytest.mark.integration

SPEC = ["--spec", "world:support_spec"]
TEAM_SPEC = ["--spec", "projection_support:team_specs"]


def withhold_approvals(request: Event) -> Event | None:
    return None if isinstance(request, ApprovalRequested) else respond(request)


def placed(events: list[Event]) -> list[Placed]:
    return [Placed(e, topic_for(type(e)).name, 0) for e in events]


class World:
    """Two agents on the topics: one finished a run, one waits for an approval."""

    def __init__(self, settings: Settings, home: Path) -> None:
        self.settings = settings
        self.home = home
        suffix = uuid.uuid4().hex[:6]
        self.done_agent, self.waiting_agent = f"done-{suffix}", f"waiting-{suffix}"
        self.done, self.done_state = drive([make_input(self.done_agent, 0, "where is my order")])
        self.waiting, self.waiting_state = drive(
            [make_input(self.waiting_agent, 0, "refund please")], world=withhold_approvals
        )
        produce(settings, placed(self.done + self.waiting))


@pytest.fixture(scope="module")
def world(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> World:
    isolated = settings.model_copy(update={"topic_prefix": f"ins{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    return World(isolated, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def schema(database_url: str, world: World) -> Iterator[str]:
    name = fresh_schema(database_url)
    feed = DirectFeed(database_url, name)
    try:
        feed.feed(placed(world.done + world.waiting))
    finally:
        feed.close()
    yield name
    drop_schemas(database_url, name)


def cli(
    world: World, *args: str, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("agentstream", path=str(Path(sys.executable).parent))
    assert exe
    s = world.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env.update(
        {
            "AGENTSTREAM_BOOTSTRAP_SERVERS": s.require_bootstrap_servers(),
            "AGENTSTREAM_SCHEMA_REGISTRY_URL": s.require_schema_registry_url(),
            "AGENTSTREAM_TOPIC_PREFIX": s.topic_prefix,
            # no dev stack record to fall back on
            "AGENTSTREAM_HOME": str(world.home),
            "PYTHONPATH": str(SUPPORT_DIR),
            "COLUMNS": "200",
        }
    )
    if database_url:
        env["AGENTSTREAM_DATABASE_URL"] = database_url
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)


def test_without_a_database_the_state_is_folded_from_the_topics(world: World) -> None:
    shown = cli(world, "inspect", world.waiting_agent, *SPEC)
    assert shown.returncode == 0, shown.stderr
    assert "no database configured" in shown.stderr
    assert "from the topics" in shown.stdout
    assert "awaiting_approval" in shown.stdout
    assert "refund" in shown.stdout and "needs approval" in shown.stdout

    as_json = cli(world, "inspect", world.waiting_agent, *SPEC, "--json")
    view = json.loads(as_json.stdout)
    state = world.waiting_state
    assert isinstance(state, AgentState) and state.run is not None
    assert view["status"] == state.status == "awaiting_approval"
    assert view["active_run_id"] == state.run.run_id
    assert view["prompt_tokens"] == state.usage.prompt_tokens
    assert [p.split(" ")[0] for p in view["pending"]] == [p.tool for p in state.run.pending_tools]
    timeline = view["timeline"]
    assert sorted(t["event_id"] for t in timeline) == sorted(
        e.envelope.event_id for e in world.waiting
    )
    assert [t["occurred_at"] for t in timeline] == sorted(t["occurred_at"] for t in timeline)
    assert view["runs"][0]["status"] == "running"


def test_with_a_database_the_read_models_are_shown(
    world: World, schema: str, database_url: str
) -> None:
    shown = cli(world, "inspect", world.done_agent, "--schema", schema, database_url=database_url)
    assert shown.returncode == 0, shown.stderr
    assert f"PostgreSQL read models (schema {schema})" in shown.stdout
    assert "1 completed, 0 failed" in shown.stdout
    assert "RunCompleted" in shown.stdout

    view = json.loads(
        cli(
            world,
            "inspect",
            world.done_agent,
            "--schema",
            schema,
            "--json",
            "--limit",
            "2",
            database_url=database_url,
        ).stdout
    )
    state = world.done_state
    assert state is not None
    assert (view["status"], view["runs_completed"]) == ("idle", 1)
    assert view["completion_tokens"] == state.usage.completion_tokens
    assert view["events"] == len(world.done)
    assert [t["type"] for t in view["timeline"]] == ["ModelCallCompleted", "RunCompleted"]
    [run] = view["runs"]
    assert run["status"] == "completed" and run["result"].startswith("done after")

    # the topics give the same answer as the read models
    folded = json.loads(
        cli(world, "inspect", world.done_agent, *SPEC, "--from-topics", "--json").stdout
    )
    for key in ("status", "runs_completed", "prompt_tokens", "completion_tokens", "events"):
        assert folded[key] == view[key], key
    assert folded["runs"][0]["run_id"] == run["run_id"]


def test_unknown_agents_and_bad_settings_are_one_line(world: World, database_url: str) -> None:
    missing = cli(
        world,
        "inspect",
        "nobody-here",
        "--schema",
        "projections_nowhere",
        database_url=database_url,
    )
    assert missing.returncode == 1
    assert "no events of agent 'nobody-here'" in missing.stderr
    assert "Traceback" not in missing.stderr
    unreachable = cli(
        world,
        "inspect",
        world.done_agent,
        *SPEC,
        database_url="postgresql://nobody@127.0.0.1:1/none",
    )
    assert unreachable.returncode == 0, unreachable.stderr
    assert (
        "cannot reach PostgreSQL" in unreachable.stderr and "from the topics" in unreachable.stdout
    )


# -- memory and run control --------------------------------------------------------------------


@pytest.fixture(scope="module")
def control(world: World, database_url: str) -> Iterator[tuple[ControlWorld, str]]:
    """Agents using the new events, on the topics and in the read models; one fact erased."""
    steered = ControlWorld.make(uuid.uuid4().hex[:6])
    events = steered.placed(steered.before + steered.erase)
    produce(world.settings, events)
    name = fresh_schema(database_url)
    feed = DirectFeed(database_url, name)
    try:
        feed.feed(steered.placed(steered.before))
        feed.feed(steered.placed(steered.erase))
    finally:
        feed.close()
    yield steered, name
    drop_schemas(database_url, name)


def test_inspect_shows_facts_pause_cancels_and_spec_versions(
    world: World, control: tuple[ControlWorld, str], database_url: str
) -> None:
    steered, schema = control
    on_db = ("--schema", schema)
    paused = cli(world, "inspect", steered.paused, *on_db, database_url=database_url)
    assert paused.returncode == 0, paused.stderr
    assert "paused" in paused.stdout and "v1" in paused.stdout
    cancelled = cli(world, "inspect", steered.cancelled, *on_db, database_url=database_url)
    assert "0 completed, 0 failed, 1 cancelled" in cancelled.stdout
    assert "cancelled by ops: wrong order" in cancelled.stdout
    waiting = json.loads(
        cli(world, "inspect", steered.waiting, *on_db, "--json", database_url=database_url).stdout
    )
    assert waiting["status"] == "waiting"
    # the topics give the same answer
    for agent in (steered.paused, steered.cancelled, steered.waiting):
        db = json.loads(
            cli(world, "inspect", agent, *on_db, "--json", database_url=database_url).stdout
        )
        topics = json.loads(cli(world, "inspect", agent, *SPEC, "--from-topics", "--json").stdout)
        for key in ("status", "runs_cancelled", "runs_completed", "facts"):
            assert db[key] == topics[key], (agent, key)
        assert [r["spec_version"] for r in db["runs"]] == [
            r["spec_version"] for r in topics["runs"]
        ]


def test_inspect_never_prints_an_erased_fact(
    world: World, control: tuple[ControlWorld, str], database_url: str
) -> None:
    steered, schema = control
    agent = steered.remembers
    shown = [
        cli(
            world, "inspect", agent, "--schema", schema, "--limit", "100", database_url=database_url
        ),
        cli(world, "inspect", agent, "--schema", schema, "--json", database_url=database_url),
        # the topics still hold the fact (until retention): the view leaves it out all the same
        cli(world, "inspect", agent, *SPEC, "--from-topics", "--limit", "100"),
        cli(world, "inspect", agent, *SPEC, "--from-topics", "--json"),
    ]
    for done in shown:
        assert done.returncode == 0, done.stderr
        assert_no_trace(done.stdout + done.stderr)
        assert f"city = {KEPT}" in done.stdout
    assert "MemoryErased" in shown[0].stdout and "MemoryErased" in shown[2].stdout
    for as_json in (shown[1], shown[3]):
        view = json.loads(as_json.stdout)
        assert view["facts"] == [f"city = {KEPT}"]
        [erased] = [t for t in view["timeline"] if t["type"] == "MemoryErased"]
        assert (erased["payload"]["key"], erased["payload"]["requested_by"]) == ("allergy", "dpo")
        assert ERASED in json.dumps(view["timeline"], ensure_ascii=False)


# -- conversations across agents ---------------------------------------------------------------


@pytest.fixture(scope="module")
def team(world: World, database_url: str) -> Iterator[tuple[TeamWorld, str]]:
    """Conversations across agents, on the topics and in the read models."""
    conversing = TeamWorld.make(uuid.uuid4().hex[:6])
    produce(world.settings, conversing.placed())
    name = fresh_schema(database_url)
    feed = DirectFeed(database_url, name)
    try:
        feed.feed(conversing.placed())
    finally:
        feed.close()
    yield conversing, name
    drop_schemas(database_url, name)


def tree_lines(view: dict[str, Any]) -> list[list[str]]:
    """Each conversation of a JSON view as "<indent><agent> <status>" lines, siblings sorted."""
    return [
        sorted(f"{'  ' * r['level']}{r['agent_id']} {r['status']}" for r in tree)
        for tree in view["conversations"]
    ]


def test_inspect_shows_the_kind_and_the_tree_of_each_conversation(
    world: World, team: tuple[TeamWorld, str], database_url: str
) -> None:
    conversing, schema = team
    lead = conversing.lead
    on_db = ("--schema", schema)
    db = json.loads(cli(world, "inspect", lead, *on_db, "--json", database_url=database_url).stdout)
    assert (db["kind"], db["runs_completed"], db["runs_handed_off"]) == ("triage", 1, 1)
    assert tree_lines(db) == [
        sorted(
            [
                f"{lead} completed",
                f"  {lead}/researcher completed",
                f"    {lead}/researcher/librarian completed",
                f"  {lead}/writer completed",
            ]
        ),
        sorted([f"{lead} handed_off", f"  {lead}/refunds completed"]),
    ]
    first, handed = db["conversations"]
    tokens = {r["agent_id"].removeprefix(lead): r["tokens"] for r in first}
    assert tokens == {"": 30, "/researcher": 30, "/researcher/librarian": 15, "/writer": 15}
    assert all(r["latency_ms"] is not None for r in first)
    assert handed[0]["result"].startswith("handed off to refunds: wants a refund")
    assert (handed[1]["relation"], handed[1]["parent_run_id"]) == (
        "handed_off",
        handed[0]["run_id"],
    )

    # the topics give the same trees
    topics = json.loads(cli(world, "inspect", lead, *TEAM_SPEC, "--from-topics", "--json").stdout)
    assert (topics["kind"], topics["runs_handed_off"]) == ("triage", 1)
    assert topics["conversations"] == db["conversations"]

    # one run's conversation, from any agent of it; the text shows the tree indented
    child = next(r for r in first if r["agent_id"] == f"{lead}/researcher")
    text = cli(
        world,
        "inspect",
        child["agent_id"],
        "--run",
        child["run_id"],
        *on_db,
        database_url=database_url,
    )
    assert text.returncode == 0, text.stderr
    assert "kind" in text.stdout and "researcher" in text.stdout
    assert "conversations (runs across agents)" in text.stdout
    rows = [line for line in text.stdout.splitlines() if conversing.suffix in line]
    assert any(f"    delegated {r['run_id'][:8]}" in line for r in first for line in rows)
    assert not any("handed off" in line for line in rows)

    # a run still going: its agent delegating, its delegated writer running
    held = json.loads(
        cli(world, "inspect", conversing.held, *TEAM_SPEC, "--from-topics", "--json").stdout
    )
    assert held["status"] == "delegating"
    assert tree_lines(held) == [
        sorted(
            [
                f"{conversing.held} running",
                f"  {conversing.held}/researcher completed",
                f"    {conversing.held}/researcher/librarian completed",
                f"  {conversing.held}/writer running",
            ]
        )
    ]
