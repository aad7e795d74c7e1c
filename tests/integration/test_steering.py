"""Steering agents end to end, with the real processor killed in the middle of each: cancel
(CLI), pause and resume (CLI), an external wait completed over HTTP, and a two-hour durable
sleep driven by the timer worker (its clock moved two hours on, as the time would pass)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from console_support import ServedApp
from harness import FakeWorkers, ServiceProcess, TopicCollector, latest_snapshots, read_to_end
from pydantic import SecretStr
from steering_world import SLEEP_S, callback_of, respond
from worker_world import accept_timestamps_ahead

from agentstream.processors.control.approvals import decide
from agentstream.processors.core.machine import run_id_of
from agentstream.processors.core.state import AgentState
from agentstream.schemas.events import (
    ApprovalRequested,
    Event,
    ModelCallRequested,
    RunCancelled,
    RunCompleted,
    TimerFired,
    TimerPurpose,
    TimerSet,
    ToolCallRequested,
)
from agentstream.streams.producer import AgentStreamProducer, new_input
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import (
    APPROVAL_REQUESTS,
    CONTROL,
    MODEL_CALLS,
    OUTCOMES,
    STATE,
    TIMERS,
    TOOL_CALLS,
    ensure_topics,
)
from agentstream.tools.console.app import Console, create_console_app

pytestmark = pytest.mark.integration
TOKEN = "steering-" + uuid.uuid4().hex
WATCHED = [MODEL_CALLS, TOOL_CALLS, APPROVAL_REQUESTS, OUTCOMES, TIMERS, CONTROL]


@dataclass
class Stack:
    """One processor for the module's tests (each kills it on its own), scripted workers, a
    reader of what the agents do, and the HTTP ingress."""

    settings: Settings
    processor: ServiceProcess
    seen: TopicCollector
    url: str
    logs: Path


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    isolated = settings.model_copy(
        update={"topic_prefix": f"st{uuid.uuid4().hex[:6]}.", "console_token": SecretStr(TOKEN)}
    )
    ensure_topics(isolated)
    logs = tmp_path_factory.mktemp("steering")
    with (
        FakeWorkers(isolated, respond),
        TopicCollector(isolated, WATCHED) as seen,
        processor(isolated, logs) as proc,
        ServedApp(create_console_app(Console(isolated))) as app,
    ):
        proc.wait_for_log("partitions_restored")
        yield Stack(isolated, proc, seen, app.url, logs)


def processor(settings: Settings, logs: Path) -> ServiceProcess:
    return ServiceProcess(
        [
            "processor",
            "run",
            "--spec",
            "steering_world:steerable",
            "--batch-size",
            "100",
            # its own group, and static: a restart after a kill resumes without a rebalance
            "--group",
            f"{settings.topic_prefix}processor",
            "--instance-id",
            "steering-1",
        ],
        settings,
        logs,
        "processor",
    )


def restarted(proc: ServiceProcess) -> None:
    """SIGKILL, as a crash would, and start again."""
    proc.kill()
    proc.start()
    proc.wait_for_log("partitions_restored")


def cli(settings: Settings, tmp_path: Path, *args: str) -> str:
    exe = shutil.which("agentstream", path=str(Path(sys.executable).parent))
    assert exe
    env = ServiceProcess([], settings, tmp_path, "cli").env()
    done = subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def send(settings: Settings, *events: Event) -> None:
    with AgentStreamProducer(settings) as producer:
        for event in events:
            producer.send(event)


def first(seen: TopicCollector, kind: type[Event], agent: str, timeout: float = 60) -> Event:
    def found(records: list[object]) -> bool:
        return any(isinstance(r, kind) and r.envelope.agent_id == agent for r in records)

    records = seen.wait_for(found, timeout)
    return next(r for r in records if isinstance(r, kind) and r.envelope.agent_id == agent)


def all_of(seen: TopicCollector, kind: type[Event], agent: str) -> list[Event]:
    return [r for r in seen.snapshot() if isinstance(r, kind) and r.envelope.agent_id == agent]


def state_of(settings: Settings, agent: str, until: Callable[[AgentState], bool]) -> AgentState:
    """The agent's latest snapshot, once it satisfies ``until``."""
    for _ in range(300):
        snapshot = latest_snapshots(read_to_end(settings, [STATE])).get(agent)
        if snapshot is not None:
            state = AgentState.from_json(snapshot.state_json, snapshot.state_format)
            if until(state):
                return state
        time.sleep(0.2)
    raise AssertionError(f"{agent}: no snapshot as expected")


def test_a_run_cancelled_while_the_processor_is_down_ends_as_cancelled_and_ignores_late_results(
    stack: Stack,
) -> None:
    settings, seen, proc = stack.settings, stack.seen, stack.processor
    question = new_input("c1", "refund please")
    send(settings, question)
    request = first(seen, ApprovalRequested, "c1")
    assert isinstance(request, ApprovalRequested)
    proc.kill()
    run_id = run_id_of(question.event_id)
    said = cli(settings, stack.logs, "runs", "cancel", run_id, "--agent", "c1", "--by", "ops")
    assert run_id in said
    proc.start()
    cancelled = first(seen, RunCancelled, "c1")
    late = decide(request, approve=True, approver="too-late")
    send(settings, late)
    state = state_of(settings, "c1", lambda s: late.event_id in s.recent_event_ids)
    assert isinstance(cancelled, RunCancelled)
    assert (cancelled.cancelled_by, cancelled.envelope.run_id) == ("ops", run_id)
    assert state.run is None and state.runs_cancelled == 1 and state.runs_completed == 0
    # the decision was recorded and ignored: the refund was never requested
    assert all_of(seen, ToolCallRequested, "c1") == []
    assert [type(o) for o in all_of(seen, RunCancelled, "c1")] == [RunCancelled]


def test_a_paused_agent_queues_inputs_across_a_crash_and_runs_them_when_resumed(
    stack: Stack,
) -> None:
    settings, seen = stack.settings, stack.seen
    cli(settings, stack.logs, "agents", "pause", "p1", "--reason", "maintenance")
    question = new_input("p1", "look it up")
    send(settings, question)
    state_of(settings, "p1", lambda s: s.paused and len(s.queue) == 1)
    restarted(stack.processor)
    held = state_of(settings, "p1", lambda s: s.paused)
    asked_while_paused = all_of(seen, ModelCallRequested, "p1")
    cli(settings, stack.logs, "agents", "resume", "p1")
    outcome = first(seen, RunCompleted, "p1")
    assert held.status == "paused" and [q.event_id for q in held.queue] == [question.event_id]
    assert asked_while_paused == []
    assert isinstance(outcome, RunCompleted)
    assert outcome.envelope.correlation_id == question.event_id


def test_an_external_wait_is_completed_over_http_after_a_crash(stack: Stack) -> None:
    send(stack.settings, new_input("w1", "ship it"))
    timer = first(stack.seen, TimerSet, "w1")
    assert isinstance(timer, TimerSet) and timer.purpose is TimerPurpose.CALLBACK
    restarted(stack.processor)
    answer = httpx.post(
        f"{stack.url}/api/callbacks/{callback_of(timer.call_id)}",
        json={"agent_id": "w1", "result": {"picked_up": True}},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert answer.status_code == 202, answer.text
    outcome = first(stack.seen, RunCompleted, "w1")
    assert isinstance(outcome, RunCompleted)
    assert "picked_up" in outcome.output


def test_a_two_hour_sleep_survives_kills_of_the_processor_and_the_timer(stack: Stack) -> None:
    settings, seen = stack.settings, stack.seen
    question = new_input("s1", "sleep on it")
    timer_args = ["worker", "timers", "run"]
    accept_timestamps_ahead(settings, timedelta(hours=3))
    with ServiceProcess(timer_args, settings, stack.logs, "timer") as timer:
        send(settings, question)
        alarm = first(seen, TimerSet, "s1")
        assert isinstance(alarm, TimerSet) and alarm.purpose is TimerPurpose.SLEEP
        timer.kill()
        restarted(stack.processor)
        # two hours later, as far as the timer worker can tell
        timer.args = [*timer_args, "--clock-offset", str(SLEEP_S + 60)]
        timer.start()
        outcome = first(seen, RunCompleted, "s1")
    fired = all_of(seen, TimerFired, "s1")
    assert alarm.fire_at - question.envelope.occurred_at >= timedelta(seconds=SLEEP_S)
    assert [(f.call_id, f.envelope.occurred_at) for f in fired if isinstance(f, TimerFired)] == [
        (alarm.call_id, alarm.fire_at)
    ]
    assert isinstance(outcome, RunCompleted) and "slept_until" in outcome.output
