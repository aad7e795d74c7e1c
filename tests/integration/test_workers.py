"""The real tool and model workers, the approval timer and the processor, as separate
processes on the real broker: retries, circuit breakers, approvals and a killed worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka.partitioner import murmur2
from builders import agent_input
from harness import ServiceProcess, TopicCollector
from worker_world import APPROVAL_TIMEOUT_S, LEDGER_ENV, read_ledger

from agentstream.processors.control.approvals import ApprovalsClient, decide
from agentstream.schemas.events import (
    AgentInput,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    DeadLetter,
    Event,
    RunCompleted,
    RunFailed,
    ToolCallCompleted,
    ToolCallFailed,
    ToolCallRequested,
)
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import (
    APPROVAL_DECISIONS,
    APPROVAL_REQUESTS,
    DLQ,
    OUTCOMES,
    TOOL_CALLS,
    TOOL_RESULTS,
    ensure_topics,
)

pytestmark = pytest.mark.integration

SPEC = "worker_world:worker_spec"
BREAKER_COOLDOWN_S = 4.0
T = TypeVar("T")


@dataclass
class Stack:
    settings: Settings
    records: TopicCollector
    ledger: Path
    processor: ServiceProcess
    tools: ServiceProcess
    models: ServiceProcess
    timer: ServiceProcess

    def send(self, agent: str, text: str) -> AgentInput:
        # Now, not the builders' fixed date: the workers stamp results with their clock, and
        # the run's deadline counts from the input.
        event = agent_input(agent, text)
        event = event.model_copy(
            update={"envelope": event.envelope.model_copy(update={"occurred_at": _now()})}
        )
        with AgentStreamProducer(self.settings) as producer:
            producer.send(event)
        return event

    def of(self, kind: type[T], agent: str | None = None, **fields: Any) -> list[T]:
        found = []
        for record in self.records.snapshot():
            if not isinstance(record, kind):
                continue
            if agent is not None and _agent_of(record) != agent:
                continue
            if all(getattr(record, k) == v for k, v in fields.items()):
                found.append(record)
        return found

    def wait_for(
        self, kind: type[T], agent: str | None = None, timeout: float = 30, **fields: Any
    ) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of(kind, agent, **fields)
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(
            f"no {kind.__name__} for {agent} {fields} in {timeout}s\n" + self.diagnostics()
        )

    def outcome(self, agent: str, timeout: float = 30) -> RunCompleted | RunFailed:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outcomes = self.of(RunCompleted, agent) + self.of(RunFailed, agent)
            if outcomes:
                return outcomes[0]
            time.sleep(0.1)
        raise AssertionError(f"no outcome for {agent} in {timeout}s\n" + self.diagnostics())

    def dead_letter(self, event_id: str, timeout: float = 20) -> DeadLetter:
        return self.wait_for(DeadLetter, None, timeout, event_id=event_id)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**self.processor.env(), "COLUMNS": "400"}
        return subprocess.run(
            [_agentstream(), *args], env=env, capture_output=True, text=True, timeout=60
        )

    def diagnostics(self) -> str:
        return "\n".join(
            f"--- {p.log_path.name}\n{p.log_tail(15)}"
            for p in (self.processor, self.tools, self.models, self.timer)
        )


def _agentstream() -> str:
    exe = shutil.which("agentstream", path=str(Path(sys.executable).parent))
    assert exe, "agentstream is not installed next to this Python"
    return exe


def _now() -> datetime:
    return datetime.now(UTC)


def _agent_of(record: object) -> str | None:
    if isinstance(record, Event):
        return record.envelope.agent_id
    if isinstance(record, DeadLetter):
        return record.agent_id
    return None


def _json_logs(process: ServiceProcess) -> list[dict[str, Any]]:
    lines = process.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = f"w{uuid.uuid4().hex[:6]}."
    isolated = settings.model_copy(update={"topic_prefix": prefix})
    ensure_topics(isolated)
    logs = tmp_path_factory.mktemp("worker-logs")
    ledger = tmp_path_factory.mktemp("ledger")

    def service(name: str, *args: str) -> ServiceProcess:
        return ServiceProcess([*args, "--group", f"{prefix}{name}"], isolated, logs, name)

    processor = service("processor", "processor", "run", "--spec", SPEC)
    tools = service(
        "tools",
        *("worker", "tools", "run", "--spec", SPEC, "--concurrency", "4"),
        *("--breaker-threshold", "3", "--breaker-cooldown", str(BREAKER_COOLDOWN_S)),
    )
    tools.extra_env[LEDGER_ENV] = str(ledger)
    models = service("models", "worker", "models", "run", "--concurrency", "4")
    timer = service("timer", "worker", "timers", "run")
    topics = [OUTCOMES, TOOL_CALLS, TOOL_RESULTS, APPROVAL_REQUESTS, APPROVAL_DECISIONS, DLQ]
    with TopicCollector(isolated, topics) as records, processor, tools, models, timer:
        processor.wait_for_log("partitions_restored")
        for worker in (tools, models, timer):
            worker.wait_for_log("worker_started")
        yield Stack(isolated, records, ledger, processor, tools, models, timer)
        for process in (processor, tools, models, timer):
            assert process.terminate() == 0, process.log_tail()


def test_a_tool_that_fails_twice_then_succeeds_completes_the_run(stack: Stack) -> None:
    stack.send("flaky-1", "please run flaky alpha")
    outcome = stack.outcome("flaky-1")
    assert isinstance(outcome, RunCompleted), outcome
    [result] = stack.of(ToolCallCompleted, "flaky-1")
    assert (result.tool, result.attempts) == ("flaky", 3)
    assert json.loads(result.result_json) == {"item": "alpha", "attempt": 3}
    assert '"attempt":3' in outcome.output


def test_an_always_failing_tool_opens_its_breaker_and_a_success_closes_it(stack: Stack) -> None:
    stack.send("breaker-1", "unreliable fail")
    first = stack.outcome("breaker-1")
    assert isinstance(first, RunFailed), first
    assert first.error_class == "tool_failed"
    assert "tool unreliable failed after 3 attempt(s): ConnectionError: the backend is down" in (
        first.reason
    )
    [opened] = stack.of(ToolCallFailed, "breaker-1")

    # The breaker is open: the next call fails at once, without running the tool.
    stack.send("breaker-2", "unreliable ok")
    second = stack.outcome("breaker-2")
    [fast] = stack.of(ToolCallFailed, "breaker-2")
    assert isinstance(second, RunFailed) and "CircuitOpenError" in second.reason
    assert (fast.attempts, fast.error_class) == (0, "CircuitOpenError")
    assert fast.latency_ms < 100
    since_open = fast.envelope.occurred_at - opened.envelope.occurred_at
    assert since_open.total_seconds() < BREAKER_COOLDOWN_S, "sent within the cool-down"

    # After the cool-down a probe goes through, works, and closes the breaker.
    reopen_at = opened.envelope.occurred_at.timestamp() + BREAKER_COOLDOWN_S + 0.3
    time.sleep(max(0.0, reopen_at - time.time()))
    stack.send("breaker-3", "unreliable ok")
    third = stack.outcome("breaker-3")
    assert isinstance(third, RunCompleted), third
    [worked] = stack.of(ToolCallCompleted, "breaker-3")
    assert worked.attempts == 1
    changes = [
        (line["old"], line["new"])
        for line in _json_logs(stack.tools)
        if line.get("event") == "breaker_state_changed" and line.get("breaker") == "unreliable"
    ]
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_gated_transfers_wait_for_people_and_bad_decisions_are_dead_lettered(
    stack: Stack,
) -> None:
    agent = "approver-1"
    client = ApprovalsClient(stack.settings)
    stack.send(agent, "transfer 500 to acct-1 then 700 to acct-2")
    first = stack.wait_for(ApprovalRequested, agent)
    time.sleep(1.0)
    assert not stack.of(ToolCallRequested, agent, call_id=first.call_id), "the run waits"
    assert not stack.of(RunCompleted, agent) and not stack.of(RunFailed, agent)

    # Granting (through the CLI, with a hash prefix) resumes the run: the tool runs once.
    granted = stack.cli(
        *("approvals", "approve", first.call_id, "--approver", "alice"),
        *("--arguments-hash", first.arguments_hash[:12]),
    )
    assert granted.returncode == 0, granted.stderr
    stack.wait_for(ToolCallCompleted, agent, call_id=first.call_id)
    grant = stack.wait_for(ApprovalGranted, agent, call_id=first.call_id)
    assert (grant.approver, grant.arguments_hash) == ("alice", first.arguments_hash)
    second = stack.wait_for(ApprovalRequested, agent, arguments_hash=_hash_of(stack, agent, 1))

    # A replayed decision is a duplicate; a second decision for the same call is rejected.
    client.send(grant)
    late = decide(first, approve=False, approver="bob")
    client.send(late)
    assert stack.dead_letter(late.envelope.event_id).error_class == "approval_not_pending"
    # A decision for other arguments than the call's is rejected; the run keeps waiting.
    wrong = decide(second, approve=True, approver="alice", arguments_hash="0" * 64)
    client.send(wrong)
    assert stack.dead_letter(wrong.envelope.event_id).error_class == "approval_hash_mismatch"
    assert not stack.of(RunCompleted, agent) and not stack.of(RunFailed, agent)

    # Denying tells the model; the tool never runs for that call.
    assert _now() < second.expires_at, "the test was too slow for the approval timeout"
    denied = stack.cli(
        *("approvals", "deny", second.call_id, "--approver", "bob"),
        *("--arguments-hash", second.arguments_hash, "--comment", "too much"),
    )
    assert denied.returncode == 0, denied.stderr
    outcome = stack.outcome(agent)
    assert isinstance(outcome, RunCompleted), outcome
    assert "transfer was not done (denied by approver)" in outcome.output
    assert not stack.of(ToolCallRequested, agent, call_id=second.call_id)
    assert [e["key"] for e in read_ledger(stack.ledger, "transfer")] == [first.call_id]
    assert len(stack.of(ToolCallRequested, agent, call_id=first.call_id)) == 1
    assert not stack.of(DeadLetter, None, event_id=grant.envelope.event_id), "replay is a no-op"


def _hash_of(stack: Stack, agent: str, index: int) -> str:
    """The arguments hash of the agent's index-th approval request, once it exists."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        requests = stack.of(ApprovalRequested, agent)
        if len(requests) > index:
            return requests[index].arguments_hash
        time.sleep(0.1)
    raise AssertionError(f"no approval request {index} for {agent}\n{stack.diagnostics()}")


def test_an_undecided_approval_expires_at_its_deadline(stack: Stack) -> None:
    agent = "expiry-1"
    stack.send(agent, "transfer 300 to acct-9")
    request = stack.wait_for(ApprovalRequested, agent)
    listed = stack.cli("approvals", "list")
    assert listed.returncode == 0 and request.call_id in listed.stdout, listed.stdout
    refused = stack.cli(
        *("approvals", "approve", request.call_id, "--approver", "alice"),
        *("--arguments-hash", "deadbeef00"),
    )
    assert refused.returncode == 1 and "does not match" in refused.stderr, refused.stderr
    early = request.expires_at.timestamp() - 1.0
    time.sleep(max(0.0, early - time.time()))
    assert not stack.of(ApprovalExpired, agent), "not before the deadline"

    expired = stack.wait_for(ApprovalExpired, agent, timeout=APPROVAL_TIMEOUT_S + 15)
    assert datetime.now(UTC) >= request.expires_at
    assert expired.envelope.occurred_at == request.expires_at
    assert (expired.call_id, expired.arguments_hash) == (request.call_id, request.arguments_hash)
    outcome = stack.outcome(agent)
    assert isinstance(outcome, RunCompleted), outcome
    assert "transfer was not done (approval expired)" in outcome.output
    assert not stack.of(ToolCallRequested, agent)

    late = decide(request, approve=True, approver="alice")
    ApprovalsClient(stack.settings).send(late)
    rejected = stack.dead_letter(late.envelope.event_id)
    assert rejected.error_class in {"unknown_run", "approval_not_pending"}
    assert len(stack.of(ApprovalExpired, agent)) == 1


def _same_partition_agents(partitions: int) -> tuple[str, str]:
    """Two agent ids whose records share a partition (Java's murmur2, like every producer)."""
    by_partition: dict[int, str] = {}
    for n in range(1000):
        agent = f"kill-{n}"
        partition = (murmur2(agent.encode()) & 0x7FFFFFFF) % partitions
        if partition in by_partition:
            return by_partition[partition], agent
        by_partition[partition] = agent
    raise AssertionError("no two agents share a partition")


def test_a_tool_worker_killed_mid_call_reruns_it_with_the_same_key(stack: Stack) -> None:
    slow_agent, quick_agent = _same_partition_agents(stack.settings.partitions)
    stack.send(slow_agent, "slow item7")
    request = stack.wait_for(ToolCallRequested, slow_agent)
    deadline = time.monotonic() + 30
    while not read_ledger(stack.ledger, "slow_write") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read_ledger(stack.ledger, "slow_write"), "the slow call started"
    # A later call on the same partition finishes first; its offset must not be committed
    # while the earlier call runs, or the earlier call would be lost with the worker.
    stack.send(quick_agent, "quick item8")
    assert isinstance(stack.outcome(quick_agent), RunCompleted)
    time.sleep(2.0)  # more than the commit interval: a commit past the slow call would be made
    stack.tools.kill()
    stack.tools.start()
    stack.tools.wait_for_log("worker_started", timeout=60)

    outcome = stack.outcome(slow_agent, timeout=60)
    assert isinstance(outcome, RunCompleted), outcome
    runs = read_ledger(stack.ledger, "slow_write")
    assert [r["key"] for r in runs] == [request.call_id, request.call_id]
    assert runs[0]["pid"] != runs[1]["pid"], "run again by the restarted worker"
    quick = stack.wait_for(ToolCallRequested, quick_agent)
    deadline = time.monotonic() + 20
    while len(read_ledger(stack.ledger, "quick_write")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    quick_runs = read_ledger(stack.ledger, "quick_write")
    assert [r["key"] for r in quick_runs] == [quick.call_id] * 2, "redelivered: not committed"
    time.sleep(1.0)
    for agent in (slow_agent, quick_agent):
        assert len(stack.of(RunCompleted, agent)) == 1, "each run completed once"
        results = stack.of(ToolCallCompleted, agent)
        assert len({r.envelope.event_id for r in results}) == 1, "one result id per call"
    dead = [d for d in stack.of(DeadLetter) if d.agent_id in (slow_agent, quick_agent)]
    assert dead == [], "a re-sent result is a duplicate, not a rejection"


def test_a_record_that_is_no_tool_call_is_dead_lettered_and_work_goes_on(stack: Stack) -> None:
    topic = stack.settings.topic(TOOL_CALLS.name)
    stray = agent_input("stray-1", "an input on the wrong topic")
    with AgentStreamProducer(stack.settings) as producer:
        producer.send(stray, topic=topic)
    letter = stack.wait_for(DeadLetter, None, original_topic=topic, source="tool_worker")
    assert letter.error_class == "wrong_topic" and letter.original_key == b"stray-1"
    stack.send("after-stray", "quick item9")
    assert isinstance(stack.outcome("after-stray"), RunCompleted)
