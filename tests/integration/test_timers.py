"""The real timer worker as a process on the real broker: durable timers fire once at their
time across kills and restarts, a shifted clock drives a two-hour sleep in seconds, the timers
and approvals of ended runs stay quiet, and a tool that awaits a callback is timed out by it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from builders import agent_input
from harness import ServiceProcess, Stamped, TopicCollector
from worker_world import CALLBACK_TIMEOUT_S, LEDGER_ENV, accept_timestamps_ahead, read_ledger

from agentstream.processors.core.ids import derived_id
from agentstream.schemas.events import (
    ApprovalExpired,
    ApprovalRequested,
    AvroRecord,
    RunCancelled,
    RunCompleted,
    RunFailed,
    TimerFired,
    TimerPurpose,
    TimerSet,
    TokenUsage,
    ToolCallWaiting,
)
from agentstream.streams.admission import check_clock
from agentstream.streams.producer import AgentStreamProducer, new_envelope
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import (
    APPROVAL_DECISIONS,
    CONTROL,
    OUTCOMES,
    TIMERS,
    TOOL_RESULTS,
    ensure_topics,
)

pytestmark = pytest.mark.integration

CALLBACK_SPEC = "worker_world:callback_spec"
TWO_HOURS = timedelta(hours=2)


@dataclass
class World:
    settings: Settings
    logs: Path
    records: TopicCollector
    prefix: str

    def service(self, name: str, *args: str) -> ServiceProcess:
        return ServiceProcess(
            [*args, "--group", f"{self.prefix}{name}"], self.settings, self.logs, name
        )

    def timer(self, name: str = "timer", *extra: str) -> ServiceProcess:
        return self.service(name, "worker", "timers", "run", *extra)

    def send(self, *records: AvroRecord) -> None:
        with AgentStreamProducer(self.settings) as producer:
            for record in records:
                producer.send(record)

    def fired(self, timer: TimerSet) -> list[Stamped]:
        return self.records.of_kind(TimerFired, timer_id=timer.timer_id)


@pytest.fixture
def world(settings: Settings, tmp_path: Path) -> Iterator[World]:
    # Topics of its own: a timer worker replays everything it finds.
    prefix = f"t{uuid.uuid4().hex[:6]}."
    isolated = settings.model_copy(update={"topic_prefix": prefix})
    ensure_topics(isolated)
    with TopicCollector(isolated, [CONTROL, APPROVAL_DECISIONS, TOOL_RESULTS, TIMERS]) as records:
        yield World(isolated, tmp_path, records, prefix)


def _now() -> datetime:
    return datetime.now(UTC)


def _timer_set(agent: str, run_id: str, fire_at: datetime) -> TimerSet:
    return TimerSet(
        envelope=new_envelope(agent, run_id=run_id, source="test"),
        timer_id=str(uuid.uuid4()),
        call_id=str(uuid.uuid4()),
        purpose=TimerPurpose.SLEEP,
        fire_at=fire_at,
    )


def _approval(agent: str, run_id: str, expires_at: datetime) -> ApprovalRequested:
    return ApprovalRequested(
        envelope=new_envelope(agent, run_id=run_id, source="test"),
        call_id=str(uuid.uuid4()),
        tool="transfer",
        arguments_json="{}",
        arguments_hash="0" * 64,
        expires_at=expires_at,
    )


def _cancelled(agent: str, run_id: str) -> RunCancelled:
    return RunCancelled(
        envelope=new_envelope(agent, run_id=run_id, source="test"),
        reason="test",
        cancelled_by="tester",
        steps=0,
        tool_calls=0,
        usage=TokenUsage(),
        started_at=_now(),
    )


def _completed(agent: str, run_id: str) -> RunCompleted:
    return RunCompleted(
        envelope=new_envelope(agent, run_id=run_id, source="test"),
        output="done",
        steps=1,
        tool_calls=0,
        usage=TokenUsage(),
        started_at=_now(),
    )


def _check_fired(stamped: Stamped, timer: TimerSet) -> None:
    """A TimerFired as the processor wants it: the timer's, at its time, and admitted."""
    fired = stamped.record
    assert isinstance(fired, TimerFired)
    assert fired.envelope.event_id == derived_id(timer.timer_id, "fired")
    assert fired.envelope.occurred_at == timer.fire_at
    assert (fired.call_id, fired.purpose) == (timer.call_id, timer.purpose)
    assert fired.envelope.causation_id == timer.envelope.event_id
    assert (fired.envelope.agent_id, fired.envelope.run_id) == (
        timer.envelope.agent_id,
        timer.envelope.run_id,
    )
    _kind, millis = stamped.timestamp
    assert millis >= int(timer.fire_at.timestamp() * 1000), "produced at or after fire_at"
    check_clock(fired, stamped.timestamp)


def test_a_timer_fires_once_at_its_time_across_kills_and_restarts(world: World) -> None:
    agent = "sleeper-1"
    timer = _timer_set(agent, "run-1", _now() + timedelta(seconds=8))
    world.send(timer)
    worker = world.timer()
    with worker:
        worker.wait_for_log("timers_caught_up")
        assert _now() < timer.fire_at, "the test was too slow for the timer"
        worker.kill()  # before fire_at: the next incarnation must find the timer again
        assert not world.fired(timer)

        worker.start()
        _check_fired(world.records.wait_for_kind(TimerFired, timer_id=timer.timer_id), timer)
        assert worker.starts == 2

        # Killed after firing: the next one reads its TimerFired back and does not repeat it.
        worker.kill()
        worker.start()
        worker.wait_for_log("timers_caught_up")
        # Later on the same partition: a repeat of the first would come before it.
        sentinel = _timer_set(agent, "run-2", _now() + timedelta(seconds=1))
        world.send(sentinel)
        _check_fired(world.records.wait_for_kind(TimerFired, timer_id=sentinel.timer_id), sentinel)
        assert len(world.fired(timer)) == 1
        assert worker.terminate() == 0, worker.log_tail()


def test_a_shifted_clock_ends_a_two_hour_sleep_at_once(world: World) -> None:
    accept_timestamps_ahead(world.settings, 1.5 * TWO_HOURS)
    timer = _timer_set("drill-1", "run-1", _now() + TWO_HOURS)
    worker = world.timer("drill-timer", "--clock-offset", str(TWO_HOURS.total_seconds()))
    with worker:
        world.send(timer)
        stamped = world.records.wait_for_kind(TimerFired, timer_id=timer.timer_id)
        assert _now() < timer.fire_at - TWO_HOURS / 2, "fired long before the real fire_at"
        _check_fired(stamped, timer)
        assert worker.terminate() == 0, worker.log_tail()


def test_the_timers_and_approvals_of_ended_runs_do_not_fire(world: World) -> None:
    agent = "ended-1"  # one agent, one partition: what fires, fires in deadline order
    soon = _now() + timedelta(seconds=2)
    cancelled_timer = _timer_set(agent, "run-cancelled", soon)
    cancelled_approval = _approval(agent, "run-cancelled", soon)
    live_timer = _timer_set(agent, "run-live", soon + timedelta(seconds=1))
    live_approval = _approval(agent, "run-live", soon + timedelta(seconds=1))
    # Outcome first, as a replay can read it: the timer worker is not running yet.
    world.send(_cancelled(agent, "run-cancelled"), cancelled_timer, cancelled_approval)
    world.send(live_timer, live_approval)
    worker = world.timer()
    with worker:
        world.records.wait_for_kind(TimerFired, timer_id=live_timer.timer_id)
        world.records.wait_for_kind(ApprovalExpired, call_id=live_approval.call_id)
        assert not world.fired(cancelled_timer)
        assert not world.records.of_kind(ApprovalExpired, call_id=cancelled_approval.call_id)

        # Live, with the worker caught up: an outcome read just before the run's timer.
        later = _now() + timedelta(seconds=1)
        completed_timer = _timer_set(agent, "run-completed", later)
        next_timer = _timer_set(agent, "run-next", later + timedelta(seconds=1))
        world.send(_completed(agent, "run-completed"), completed_timer, next_timer)
        world.records.wait_for_kind(TimerFired, timer_id=next_timer.timer_id)
        assert not world.fired(completed_timer)
        assert worker.terminate() == 0, worker.log_tail()


def test_a_tool_awaiting_a_callback_waits_and_times_out_on_the_timer(
    world: World, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    processor = world.service("processor", "processor", "run", "--spec", CALLBACK_SPEC)
    tools = world.service("tools", "worker", "tools", "run", "--spec", CALLBACK_SPEC)
    tools.extra_env[LEDGER_ENV] = str(ledger)
    models = world.service("models", "worker", "models", "run")
    timer = world.timer()
    services = (processor, tools, models, timer)
    with processor, tools, models, timer, TopicCollector(world.settings, [OUTCOMES]) as ends:
        processor.wait_for_log("partitions_restored")
        for worker in (tools, models, timer):
            worker.wait_for_log("worker_started")
        agent = "reviewer-1"
        sent = agent_input(agent, "please review doc7")
        sent = sent.model_copy(
            update={"envelope": sent.envelope.model_copy(update={"occurred_at": _now()})}
        )
        world.send(sent)

        waiting = world.records.wait_for_kind(ToolCallWaiting).record
        assert isinstance(waiting, ToolCallWaiting)
        assert waiting.tool == "external_review"
        assert waiting.callback_id == derived_id(waiting.call_id, "callback")
        assert waiting.expires_at == waiting.envelope.occurred_at + timedelta(
            seconds=CALLBACK_TIMEOUT_S
        )
        assert read_ledger(ledger, "external_review") == [
            {"key": waiting.call_id, "callback_id": waiting.callback_id}
        ]
        assert waiting.attempts == 1

        # The processor sets a timer for the wait; nobody completes the callback, so it fires.
        timer_set = world.records.wait_for_kind(TimerSet, call_id=waiting.call_id).record
        assert isinstance(timer_set, TimerSet)
        assert (timer_set.purpose, timer_set.fire_at) == (
            TimerPurpose.CALLBACK,
            waiting.expires_at,
        )
        _check_fired(
            world.records.wait_for_kind(TimerFired, timer_id=timer_set.timer_id), timer_set
        )
        outcome = ends.wait_for_kind(RunCompleted).record
        assert isinstance(outcome, RunCompleted), outcome
        assert outcome.envelope.run_id == waiting.envelope.run_id
        assert f"no system completed callback {waiting.callback_id}" in outcome.output
        assert not ends.of_kind(RunFailed)
        for service in services:
            assert service.terminate() == 0, service.log_tail()
