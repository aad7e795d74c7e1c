"""The bad-input corpus (tests/support/bad_inputs.py) thrown at every entry point of the running
services: the SDK, the CLI, the topics and the approvals. Each case gets a clear error or a
dead letter with a reason, good inputs around them all arrive, every service keeps running,
and what reaches PostgreSQL is stored as data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_inputs import CORPUS, NUL_TEXT, SQL_TEXT, Context, TopicCase, now_input
from confluent_kafka import KafkaError, Message, Producer
from harness import ServiceProcess, TopicCollector
from projection_support import drop_schemas, fresh_schema, wait_caught_up

from agentstream.processors.control.approvals import decide
from agentstream.processors.loading import DEFAULT_SPEC, load_spec
from agentstream.projections.database import connect
from agentstream.schemas.events import (
    ApprovalRequested,
    DeadLetter,
    RunCompleted,
    RunFailed,
    ToolCallCompleted,
)
from agentstream.streams.dlq import MAX_ORIGINAL_VALUE
from agentstream.streams.producer import MAX_VALUE_BYTES, AgentStreamProducer, Delivery
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topic_scan import scan_topics
from agentstream.streams.topics import (
    APPROVAL_REQUESTS,
    DLQ,
    OUTCOMES,
    TOOL_RESULTS,
    ensure_topics,
)

pytestmark = pytest.mark.integration
REFUND = "Order o-1003 arrived broken, please refund it."
Position = tuple[str, int, int]


@dataclass
class Stack:
    settings: Settings
    schema: str
    records: TopicCollector
    services: list[ServiceProcess]
    broker_kind: str

    def outcomes(self, agent: str) -> list[RunCompleted | RunFailed]:
        return [
            r
            for r in self.records.snapshot()
            if isinstance(r, RunCompleted | RunFailed) and r.envelope.agent_id == agent
        ]

    def letters(self) -> list[DeadLetter]:
        return [r for r in self.records.snapshot() if isinstance(r, DeadLetter)]

    def wait(self, what: str, missing: Callable[[], list[str]], timeout: float = 45) -> None:
        """Until ``missing`` reports nothing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not missing():
                return
            time.sleep(0.2)
        tails = "\n".join(f"--- {s.log_path.name}\n{s.log_tail(8)}" for s in self.services)
        raise AssertionError(f"timed out waiting for {what}: {missing()}\n{tails}")

    def cli(self, args: list[str], stdin: str) -> subprocess.Popen[str]:
        exe = shutil.which("agentstream", path=str(Path(sys.executable).parent))
        assert exe
        env = {**self.services[0].env(), "COLUMNS": "400"}
        proc = subprocess.Popen(
            [exe, *args],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        proc.stdin = None  # so communicate() only reads
        return proc


@pytest.fixture(scope="module")
def stack(
    settings: Settings,
    database_url: str,
    broker_kind: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    prefix = f"bad{uuid.uuid4().hex[:6]}."
    isolated = settings.model_copy(update={"topic_prefix": prefix})
    ensure_topics(isolated)
    schema = fresh_schema(database_url)
    logs = tmp_path_factory.mktemp("bad-input-logs")

    def service(name: str, *args: str) -> ServiceProcess:
        return ServiceProcess([*args, "--group", f"{prefix}{name}"], isolated, logs, name)

    services = [
        service("processor", "processor", "run", "--spec", DEFAULT_SPEC),
        service("tool-worker", "worker", "tools", "run", "--spec", DEFAULT_SPEC),
        service("model-worker", "worker", "models", "run"),
        service("timer", "worker", "timers", "run"),
        service("projector", "projections", "run", "--schema", schema),
    ]
    topics = [OUTCOMES, DLQ]  # topics that get no garbage: the collector decodes everything
    try:
        with TopicCollector(isolated, topics) as records:
            for process in services:
                process.start()
            for process, marker in zip(
                services,
                ["processor_started", *["worker_started"] * 3, "projector_started"],
                strict=True,
            ):
                process.wait_for_log(marker)
            yield Stack(isolated, schema, records, services, broker_kind)
            for process in services:
                assert process.terminate() == 0, process.log_tail()
    finally:
        for process in services:
            process.kill()
        drop_schemas(database_url, schema)


def _victim(stack: Stack, producer: AgentStreamProducer) -> Context:
    """A run that waits for a person: its approval request and its finished lookup."""
    agent = "victim-1"
    producer.send(now_input(agent, REFUND))
    found: dict[str, object] = {}
    serde = producer.serde

    def ready() -> list[str]:
        for scanned in scan_topics(stack.settings, serde, [APPROVAL_REQUESTS, TOOL_RESULTS]):
            record = scanned.record
            if isinstance(record, ApprovalRequested) and record.envelope.agent_id == agent:
                found["request"] = record
            if isinstance(record, ToolCallCompleted) and record.envelope.agent_id == agent:
                found["lookup"] = record
        return [] if len(found) == 2 else ["request or lookup"]

    stack.wait("the victim's approval request", ready)
    request, lookup = found["request"], found["lookup"]
    assert isinstance(request, ApprovalRequested) and isinstance(lookup, ToolCallCompleted)
    return Context(stack.settings, producer, load_spec(DEFAULT_SPEC), request, lookup)


def _produce_big(
    settings: Settings, topic: str, key: bytes | None, value: bytes, broker_kind: str
) -> Position | None:
    """Sent by a client whose size limit was raised: what a careless producer can do. Apache
    Kafka refuses it at the door (the topics keep the broker's 1 MB ``max.message.bytes``);
    the embedded broker takes it, so the readers must dead-letter it (README, "Broker
    differences")."""
    producer = Producer(
        {
            **settings.kafka_config(),
            "message.max.bytes": 4 * len(value),
            "partitioner": "murmur2_random",
        }
    )
    delivered: list[Message] = []
    producer.produce(topic, value, key, on_delivery=lambda err, msg: delivered.append(msg))
    producer.flush(30)
    [msg] = delivered
    if broker_kind == "kafka":
        error = msg.error()
        assert error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE, error
        return None
    assert msg.error() is None, msg.error()
    return (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def _throw_at_topics(ctx: Context, goods: list[str], broker_kind: str) -> dict[Position, TopicCase]:
    """Every topic case as raw bytes, each followed by a good input."""
    sent: dict[Position, TopicCase] = {}
    for n, case in enumerate(CORPUS.topics):
        key, value = case.build(ctx)
        topic = ctx.settings.topic(case.topic.name)
        if value is not None and len(value) > MAX_VALUE_BYTES:
            position = _produce_big(ctx.settings, topic, key, value, broker_kind)
            if position is not None:
                sent[position] = case
        else:
            delivery: Delivery = ctx.producer.produce_raw(topic, key, value).result(30)
            sent[(delivery.topic, delivery.partition, delivery.offset)] = case
        good = f"good-{n:02d}"
        ctx.producer.send(now_input(good, "Where is my order o-1001?"))
        goods.append(good)
    return sent


def _throw_everything(stack: Stack, goods: list[str]) -> tuple[dict[Position, TopicCase], Delivery]:
    """Every case at its entry point; returns the topic cases by position and the position of
    a second decision for the victim's call (sent after the real one)."""
    with AgentStreamProducer(stack.settings) as producer:
        ctx = _victim(stack, producer)
        # the CLI runs in the background while everything else is thrown
        clis = [(case, stack.cli(case.args(ctx), case.stdin)) for case in CORPUS.cli]
        for sdk_case in CORPUS.sdk:
            with pytest.raises(sdk_case.error) as raised:
                sdk_case.call(ctx)
            assert sdk_case.message in str(raised.value), (sdk_case.kind, raised.value)
        sent = _throw_at_topics(ctx, goods, stack.broker_kind)
        for event_case in CORPUS.events:
            for event in event_case.build(ctx):
                producer.send(event)
        for cli_case, proc in clis:
            stdout, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 1, (cli_case.kind, stdout, stderr)
            lines = [line for line in stderr.splitlines() if line.strip()]
            assert lines[0].startswith("error:") and cli_case.message in stderr, (
                cli_case.kind,
                stderr,
            )
            assert "Traceback" not in stderr
        # the victim's run goes on: the real decision, then a replay of it (a duplicate), then
        # a second decision for the same call (rejected)
        grant = decide(ctx.request, approve=True, approver="alice")
        producer.send(grant)
        producer.send(grant)
        return sent, producer.send(decide(ctx.request, approve=False, approver="bob"))


def _check_dead_letters(stack: Stack, sent: dict[Position, TopicCase], late: Delivery) -> None:
    followup_agents = {c.agent: c.followups for c in CORPUS.topics if c.agent} | {
        c.agent: c.followups for c in CORPUS.events if c.followups
    }
    expected_letters = {
        (position, reader, error_class)
        for position, case in sent.items()
        for reader, error_class in case.readers.items()
    }

    def all_letters() -> list[str]:
        seen = {
            ((d.original_topic, d.original_partition, d.original_offset), d.source, d.error_class)
            for d in stack.letters()
        }
        agents = {d.agent_id for d in stack.letters()}
        return [
            f"{sent[position].kind}: {reader} {error_class}"
            for position, reader, error_class in expected_letters - seen
        ] + [f"a follow-up for {agent}" for agent in set(followup_agents) - agents]

    stack.wait("every expected dead letter", all_letters)
    wait_caught_up(stack.settings, stack.settings.require_database_url(), stack.schema)
    time.sleep(1.0)  # anything unexpected still on its way
    problems = []
    for letter in stack.letters():
        position = (letter.original_topic, letter.original_partition, letter.original_offset)
        assert letter.reason.strip(), letter
        if (position, letter.source, letter.error_class) in expected_letters:
            if len(letter.original_value or b"") >= MAX_ORIGINAL_VALUE:
                assert "cut to its first" in letter.reason, letter.reason
            continue
        if position == (late.topic, late.partition, late.offset) and letter.error_class in {
            "approval_not_pending",
            "unknown_run",
        }:
            continue  # the second decision for the victim's call
        if letter.error_class in followup_agents.get(letter.agent_id or "", frozenset()):
            continue
        case = sent.get(position)
        problems.append(
            f"{case.kind if case else letter.agent_id}: unexpected dead letter from "
            f"{letter.source}: {letter.error_class}: {letter.reason[:300]}"
        )
    assert not problems, "\n".join(problems)


def _check_stored_as_data(stack: Stack, goods: list[str]) -> None:
    """SQL text verbatim, NUL visibly replaced, nothing executed."""
    with connect(stack.settings.require_database_url(), stack.schema) as conn:
        texts = dict(conn.execute("SELECT agent_id, input_text FROM runs").fetchall())
        assert texts["sql-1"] == SQL_TEXT
        assert texts["nul-1"] == NUL_TEXT.replace("\x00", "\ufffd")
        flagged = conn.execute(
            "SELECT count(*) FROM agent_events WHERE agent_id = 'nul-1' AND sanitized"
        ).fetchone()
        assert flagged is not None and flagged[0] >= 1
        agents = conn.execute("SELECT count(*) FROM agents").fetchone()
        assert agents is not None and agents[0] >= len(goods)


def test_every_bad_input_gets_a_clear_error_or_a_dead_letter(stack: Stack) -> None:
    assert len(CORPUS.kinds()) == len(set(CORPUS.kinds())) >= 30
    goods: list[str] = []
    sent, late = _throw_everything(stack, goods)
    expected_agents = [*goods, *(c.agent for c in CORPUS.events), "victim-1"]
    stack.wait(
        "an outcome for every good input, odd event and the victim",
        lambda: [agent for agent in expected_agents if not stack.outcomes(agent)],
    )
    _check_dead_letters(stack, sent, late)

    # every good input arrived, each with one outcome
    for agent in goods:
        assert [type(o) for o in stack.outcomes(agent)] == [RunCompleted], agent
    for event_case in CORPUS.events:
        [outcome] = stack.outcomes(event_case.agent)
        kind = type(outcome).__name__
        if isinstance(outcome, RunFailed):
            kind += f":{outcome.error_class}"
        assert kind == event_case.outcome, (event_case.kind, outcome)
    assert isinstance(stack.outcomes("victim-1")[0], RunCompleted)
    for agent in ("cli-a", "cli-b", "big-1", "surrogate-2"):
        assert not stack.outcomes(agent), f"{agent}: a refused input must send nothing"
    for process in stack.services:
        assert process.alive(), f"{process.log_path.name} died\n{process.log_tail()}"
    _check_stored_as_data(stack, goods)
    print(
        f"\nbad-input corpus: {len(CORPUS.kinds())} kinds ({len(CORPUS.topics)} on topics, "
        f"{len(CORPUS.events)} odd events, {len(CORPUS.sdk)} SDK, {len(CORPUS.cli)} CLI), "
        f"{len(stack.letters())} dead letters, {len(goods)} good inputs all answered"
    )
