"""`agentstream replay agent|dlq|copy|projections` as a user runs them, on the real broker and
PostgreSQL, each test under a topic prefix of its own; each checks the output and the effect."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer
from harness import SUPPORT_DIR, ServiceProcess, TopicCollector, read_to_end
from histories import Placed, drive, make_input
from projection_support import drop_schemas, produce
from world import Team, respond, team

from agentstream.projections.database import connect
from agentstream.schemas.events import ApprovalRequested, Event, ModelCallRequested
from agentstream.streams.dlq import DeadLetterSink
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.replay_reader import TopicReader, partition_of
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import INPUTS, MODEL_CALLS, OUTCOMES, ensure_topics, topic_for
from agentstream.tools.replay.dlq import REDRIVEN_FROM

pytestmark = pytest.mark.integration


@pytest.fixture
def isolated(settings: Settings) -> Settings:
    isolated = settings.model_copy(update={"topic_prefix": f"rp{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    return isolated


def cli(settings: Settings, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("agentstream", path=str(Path(sys.executable).parent))
    assert exe
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env.update(
        {
            "AGENTSTREAM_BOOTSTRAP_SERVERS": settings.require_bootstrap_servers(),
            "AGENTSTREAM_SCHEMA_REGISTRY_URL": settings.require_schema_registry_url(),
            "AGENTSTREAM_DATABASE_URL": settings.require_database_url(),
            "AGENTSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "AGENTSTREAM_HOME": str(home),
            "PYTHONPATH": str(SUPPORT_DIR),
            "COLUMNS": "250",
        }
    )
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=90)


def placed(events: list[Event]) -> list[Placed]:
    return [Placed(e, topic_for(type(e)).name, 0) for e in events]


# -- replay agent ------------------------------------------------------------------------------


def test_agent_replay_is_identical_for_the_same_code_and_shows_a_changed_spec(
    isolated: Settings, tmp_path: Path
) -> None:
    history, _ = drive(
        [make_input("ana", 0, "refund please"), make_input("ana", 1, "hello", at_s=60)]
    )
    produce(isolated, placed(history))

    same = cli(isolated, tmp_path, "replay", "agent", "ana", "--spec", "world:support_spec")
    assert same.returncode == 0, same.stdout + same.stderr
    outputs = sum(1 for e in history if e.envelope.source == "processor")
    summary = f"identical: {len(history) - outputs} inputs re-folded, outputs: {outputs} same"
    assert summary in same.stdout

    # the demo's agent has another prompt and tools: its model calls differ from the recording
    changed = cli(
        isolated, tmp_path, "replay", "agent", "ana", "--json",
        "--spec", "agentstream.processors.examples:support_agent",
    )  # fmt: skip
    assert changed.returncode == 1, changed.stderr
    result = json.loads(changed.stdout)
    assert result["identical"] is False and result["changed"] >= 1
    first = result["differences"][0]
    assert first["cause"]["type"] == "AgentInput"
    [model_call] = first["outputs"]
    paths = {c["path"] for c in model_call["changes"]}
    assert model_call["type"] == "ModelCallRequested" and "system_prompt" in paths

    nobody = cli(isolated, tmp_path, "replay", "agent", "nobody", "--spec", "world:support_spec")
    assert nobody.returncode == 1 and "no events of agent 'nobody'" in nobody.stderr
    # nothing was produced by the replays
    assert len(read_to_end(isolated, [MODEL_CALLS])) == sum(
        isinstance(e, ModelCallRequested) for e in history
    )


def test_agent_replay_of_a_stuck_agent_says_what_its_run_waits_for(
    isolated: Settings, tmp_path: Path
) -> None:
    def nobody_approves(request: Event) -> Event | None:
        return None if isinstance(request, ApprovalRequested) else respond(request)

    history, state = drive([make_input("stuck", 0, "refund please")], world=nobody_approves)
    assert state is not None and state.run is not None
    produce(isolated, placed(history))
    done = cli(isolated, tmp_path, "replay", "agent", "stuck", "--spec", "world:support_spec")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical:" in done.stdout
    pending = state.run.pending_tools[0]
    assert f"run {state.run.run_id} is still open" in done.stdout
    assert f"approval of refund call {pending.call_id}" in done.stdout
    as_json = cli(
        isolated, tmp_path, "replay", "agent", "stuck", "--json", "--spec", "world:support_spec"
    )
    result = json.loads(as_json.stdout)
    assert result["open_run"] == state.run.run_id
    assert result["waiting_for"] == [f"approval of refund call {pending.call_id}"]


def test_agent_replay_of_a_team_uses_the_recorded_answers_unless_told_to_replay_children(
    isolated: Settings, tmp_path: Path
) -> None:
    squad = Team(team())
    emitted = squad.run(make_input("tm", 0, "ask_researcher ask_writer: where is o-1?"))
    assert squad.rejected == []
    on_topics = {e.envelope.event_id: e for e in [*squad.delivered, *emitted]}
    produce(isolated, placed(list(on_topics.values())))

    # the parent's tasks for its children and the children's answers are keyed to the agent
    # they went to, on its partitions: both replay identically all the same
    for agent in ("tm", "tm/writer"):
        same = cli(isolated, tmp_path, "replay", "agent", agent, "--spec", "world:team")
        assert same.returncode == 0, same.stdout + same.stderr
        assert "identical: " in same.stdout and " new" not in same.stdout, same.stdout

    what_if = cli(
        isolated, tmp_path, "replay", "agent", "tm", "--children", "--json",
        "--spec", "world:team_with_terse_writer",
    )  # fmt: skip
    assert what_if.returncode == 1, what_if.stderr
    result = json.loads(what_if.stdout)
    verdicts = {a["child_agent_id"]: a["verdict"] for a in result["answers"]}
    assert verdicts == {"tm/researcher": "same", "tm/writer": "changed"}
    assert [(c["agent_id"], c["identical"]) for c in result["children"]] == [
        ("tm/researcher", True),
        ("tm/writer", False),
    ]
    [step] = result["differences"]
    assert step["cause"]["type"] == "DelegationReturned"
    assert [o["type"] for o in step["outputs"]] == ["ModelCallRequested"]


# -- replay dlq --------------------------------------------------------------------------------


def test_dead_letters_are_redriven_once_and_processed(isolated: Settings, tmp_path: Path) -> None:
    inputs = [make_input(f"dl-{i}", 0, "where is my order") for i in range(2)]
    topic = isolated.topic(INPUTS.name)
    with AgentStreamProducer(isolated) as producer:
        sink = DeadLetterSink(producer, "processor")
        for n, event in enumerate(inputs):  # as if a broken processor had refused them
            agent = event.envelope.agent_id
            sink.send(
                topic=topic,
                partition=partition_of(agent, isolated.partitions),
                offset=100 + n,
                key=agent.encode(),
                value=producer.encode(event, topic),
                headers=[("trace", b"t-1")],
                reason="simulated outage of the registry",
                error_class="registry_unavailable",
                event=event,
            )
        sink.send(
            topic=topic, partition=0, offset=7, key=b"x", value=b"garbage", headers=None,
            reason="not Avro", error_class="undecodable",
        )  # fmt: skip

    dry = cli(isolated, tmp_path, "replay", "dlq", "--dry-run", "--reason", "registry_unavailable")
    assert dry.returncode == 0, dry.stderr
    assert "would redrive 2 dead letter(s); 0 redriven before, 1 not matching" in dry.stdout
    assert "dl-0" in dry.stdout and "dl-1" in dry.stdout
    assert read_to_end(isolated, [INPUTS]) == [], "a dry run sends nothing"

    processor = ServiceProcess(
        ["processor", "run", "--spec", "world:support_spec"], isolated, tmp_path, "processor"
    )
    with TopicCollector(isolated, [MODEL_CALLS]) as calls, processor:
        processor.wait_for_log("processor_started")
        done = cli(isolated, tmp_path, "replay", "dlq", "--reason", "registry_unavailable")
        assert done.returncode == 0, done.stderr
        assert "redrove 2 dead letter(s)" in done.stdout
        wanted = {e.envelope.event_id for e in inputs}
        seen = calls.wait_for(
            lambda r: wanted <= {c.envelope.causation_id for c in r if isinstance(c, Event)}, 60
        )
        assert wanted <= {c.envelope.causation_id for c in seen if isinstance(c, Event)}, (
            processor.log_tail()
        )
    arrived = _raw(isolated, topic)
    assert sorted(arrived) == sorted(e.envelope.agent_id for e in inputs)
    for agent, (partition, headers) in arrived.items():
        assert partition == partition_of(agent, isolated.partitions)
        assert headers["trace"] == b"t-1" and REDRIVEN_FROM in headers

    again = cli(isolated, tmp_path, "replay", "dlq")
    assert "redrove 1 dead letter(s); 2 redriven before" in again.stdout, again.stdout
    assert len(_raw(isolated, topic, everything=True)) == 3, "the garbage letter, once"


def _raw(settings: Settings, topic: str, everything: bool = False) -> dict[str, object]:
    """key -> (partition, headers) of the records on ``topic``."""
    found: dict[str, object] = {}
    with TopicReader(settings) as reader:
        for n, msg in enumerate(reader.read(reader.spans([topic]))):
            key = (msg.key() or b"").decode()
            name = f"{key}#{n}" if everything else key
            found[name] = (msg.partition(), dict(msg.headers() or []))
    return found


# -- replay copy -------------------------------------------------------------------------------


def test_copy_keeps_partitions_keys_headers_and_timestamps(
    isolated: Settings, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    moments = [now - timedelta(hours=h) for h in (3, 2, 1)]
    producer = Producer(isolated.kafka_config())
    for topic in (INPUTS, OUTCOMES):
        for n, moment in enumerate(moments):
            producer.produce(
                isolated.topic(topic.name),
                value=f"{topic.name}-{n}".encode(),
                key=f"agent-{n}".encode(),
                partition=n % isolated.partitions,
                timestamp=int(moment.timestamp() * 1000),
                headers=[("h", f"v{n}".encode())],
            )
    assert producer.flush(30) == 0
    target = isolated.model_copy(update={"topic_prefix": isolated.topic_prefix + "copy."})

    since = (now - timedelta(hours=2, minutes=30)).isoformat()
    copied = cli(isolated, tmp_path, "replay", "copy", "--to-prefix", target.topic_prefix,
                 "--since", since, "--until", "90m")  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert "copied 2 records" in copied.stdout
    for topic in (INPUTS, OUTCOMES):
        records = _records(target, target.topic(topic.name))
        assert records == [
            (1, b"agent-1", f"{topic.name}-1".encode(), int(moments[1].timestamp() * 1000),
             [("h", b"v1")]),
        ], topic.name  # fmt: skip

    everything = cli(
        isolated, tmp_path, "replay", "copy",
        "--to-prefix", target.topic_prefix + "all.", "--topic", "agent.inputs",
    )  # fmt: skip
    assert "copied 3 records" in everything.stdout, everything.stderr
    onto_itself = cli(isolated, tmp_path, "replay", "copy")
    assert onto_itself.returncode == 1 and "overwrite its source" in onto_itself.stderr


def _records(settings: Settings, topic: str) -> list[tuple[object, ...]]:
    with TopicReader(settings) as reader:
        return [
            (m.partition(), m.key(), m.value(), m.timestamp()[1], m.headers())
            for m in reader.read(reader.spans([topic]))
        ]


# -- replay projections ------------------------------------------------------------------------


def test_projections_from_a_time_window_and_in_full(
    isolated: Settings, tmp_path: Path, database_url: str
) -> None:
    old, _ = drive([make_input("old-agent", 0, "hello")])
    produce_one_by_one(isolated, old)
    middle = datetime.now(UTC)
    time.sleep(0.05)  # records produced from here on are stamped after ``middle``
    new, _ = drive([make_input("new-agent", 0, "where is my order")], world=respond)
    produce_one_by_one(isolated, new)
    live = f"t_{uuid.uuid4().hex[:10]}"
    window = f"{live}_w"
    try:
        run = cli(isolated, tmp_path, "replay", "projections", "--schema", live,
                  "--into", window, "--since", middle.isoformat())  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert f"projected {len(new)} events" in run.stdout
        assert _agents(database_url, window) == ["new-agent"]

        refused = cli(isolated, tmp_path, "replay", "projections", "--schema", live,
                      "--into", live, "--from-offset", "0")  # fmt: skip
        assert refused.returncode == 1 and "never projected into the live" in refused.stderr

        full = cli(isolated, tmp_path, "replay", "projections", "--schema", live)
        assert full.returncode == 0, full.stderr
        assert f"rebuilt {len(old) + len(new)} records" in full.stdout
        assert _agents(database_url, live) == ["new-agent", "old-agent"]
        not_a_window = cli(isolated, tmp_path, "replay", "projections", "--into", live,
                           "--from-offset", "agent.inputs:0=0")  # fmt: skip
        assert not_a_window.returncode == 1 and "is not a window replay" in not_a_window.stderr
    finally:
        drop_schemas(database_url, live, window)


def produce_one_by_one(settings: Settings, events: list[Event]) -> None:
    # One record per batch: the embedded broker's high watermark can stop short of the last
    # records of a batch, and the replay's planned sizes come from watermarks.
    with AgentStreamProducer(settings) as producer:
        for event in events:
            producer.send(event)


def _agents(database_url: str, schema: str) -> list[str]:
    with connect(database_url, schema) as conn:
        return [str(r[0]) for r in conn.execute("SELECT agent_id FROM agents ORDER BY 1")]
