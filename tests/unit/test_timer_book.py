"""The timer worker's bookkeeping without a broker (what a replay in any order must leave due),
and a tool that answers "wait for a callback"."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from builders import envelope

from agentstream.processors.control.approvals import decide, expire
from agentstream.processors.control.timers import fire
from agentstream.processors.core.ids import arguments_hash, derived_id
from agentstream.processors.core.spec import RetryPolicy, tool
from agentstream.processors.errors import WorkerError
from agentstream.processors.workers.breaker import BreakerPolicy, BreakerRegistry
from agentstream.processors.workers.timer_book import Deadlines, PartitionBook
from agentstream.processors.workers.tool_executor import ToolExecutor
from agentstream.processors.workers.toolcontext import AwaitCallback, callback_id
from agentstream.schemas.events import (
    ApprovalRequested,
    AvroRecord,
    RunCancelled,
    TimerPurpose,
    TimerSet,
    TokenUsage,
    ToolCallFailed,
    ToolCallRequested,
    ToolCallWaiting,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TOPICS = ("requests", "decisions", "timers", "control", "outcomes")


def _timer(n: int, run_id: str = "run-1", at: datetime = T0) -> TimerSet:
    return TimerSet(
        envelope=envelope(event_id=f"set-{n}", run_id=run_id),
        timer_id=f"timer-{n}",
        call_id=f"call-{n}",
        purpose=TimerPurpose.SLEEP,
        fire_at=at,
    )


def _request(n: int, run_id: str = "run-1", at: datetime = T0) -> ApprovalRequested:
    return ApprovalRequested(
        envelope=envelope(event_id=f"req-{n}", run_id=run_id),
        call_id=f"approval-{n}",
        tool="transfer",
        arguments_json="{}",
        arguments_hash=arguments_hash("{}"),
        expires_at=at,
    )


def _cancelled(run_id: str) -> RunCancelled:
    return RunCancelled(
        envelope=envelope(event_id=f"end-{run_id}", run_id=run_id),
        reason="stop",
        cancelled_by="op",
        steps=0,
        tool_calls=0,
        usage=TokenUsage(),
        started_at=T0,
    )


def _replayed(*records: AvroRecord) -> PartitionBook:
    book = PartitionBook(len(TOPICS))
    for record in records:
        book.apply(record)
    for topic in TOPICS:
        book.reached_end(topic)
    return book


def test_deadlines_come_earliest_first_and_skip_removed_ones() -> None:
    deadlines: Deadlines[str] = Deadlines()
    for n, minutes in enumerate((30, 10, 20, 40)):
        deadlines.add(f"k{n}", T0 + timedelta(minutes=minutes), f"run-{n % 2}", f"item{n}")
    deadlines.pop("k2")
    assert deadlines.drop_run("run-1") == 2  # k1 and k3
    assert deadlines.next_due() == T0 + timedelta(minutes=30)
    assert deadlines.pop_due(T0 + timedelta(minutes=29)) == []
    assert deadlines.pop_due(T0 + timedelta(hours=1)) == ["item0"]
    assert len(deadlines) == 0 and deadlines.next_due() is None


def test_nothing_is_due_before_every_topic_was_read_to_its_end() -> None:
    book = PartitionBook(len(TOPICS))
    book.apply(_timer(1))
    for topic in TOPICS[:-1]:
        book.reached_end(topic)
    assert book.due(T0 + timedelta(days=1)) == []
    book.reached_end(TOPICS[-1])
    assert book.due(T0 + timedelta(days=1)) == [_timer(1)]


@pytest.mark.parametrize("fired_first", [True, False])
def test_a_fired_timer_is_not_due_in_whichever_order_a_replay_reads_it(fired_first: bool) -> None:
    records = [fire(_timer(1)), _timer(1)] if fired_first else [_timer(1), fire(_timer(1))]
    book = _replayed(*records, _timer(2, at=T0 + timedelta(seconds=1)))
    assert book.due(T0 + timedelta(days=1)) == [_timer(2, at=T0 + timedelta(seconds=1))]


def test_an_ended_run_leaves_no_timer_or_approval_due() -> None:
    late = T0 + timedelta(hours=1)
    book = _replayed(_cancelled("run-1"), _timer(1), _request(1), _timer(2, "run-2", late))
    book.apply(_timer(3, "run-3"))
    book.apply(_request(3, "run-3"))
    book.apply(_cancelled("run-3"))  # live, after its timers
    book.apply(_cancelled("run-4"))
    book.apply(_timer(4, "run-4"))  # live, just after its outcome
    assert book.due(late) == [_timer(2, "run-2", late)]


def test_only_a_decision_the_processor_applies_settles_an_approval() -> None:
    request = _request(1, at=T0 + timedelta(minutes=5))
    wrong_hash = decide(request, approve=True, approver="a", arguments_hash="0" * 64, now=T0)
    too_late = decide(request, approve=True, approver="b", now=T0 + timedelta(minutes=6))
    book = _replayed(wrong_hash, too_late, request)
    assert book.due(T0 + timedelta(minutes=5)) == [request]
    granted = decide(request, approve=True, approver="c", now=T0)
    assert _replayed(granted, request).due(T0 + timedelta(days=1)) == []
    assert _replayed(request, expire(request)).due(T0 + timedelta(days=1)) == []


def test_fired_events_are_stamped_with_the_deadline_and_named_by_the_timer() -> None:
    fired = fire(_timer(1, at=T0 + timedelta(hours=2)))
    assert fired.envelope.occurred_at == T0 + timedelta(hours=2)
    assert fired.envelope.event_id == derived_id("timer-1", "fired")
    assert fired.envelope.causation_id == "set-1"


handed_out: Counter[str] = Counter()


@tool(retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.001, max_backoff_s=0.002))
def review(doc: str, timeout_s: float) -> AwaitCallback:
    """Hands the document to people; they answer through the callback."""
    handed_out[callback_id()] += 1
    return AwaitCallback(timeout_s=timeout_s, detail=f"review of {doc}")


def _review_call(call_id: str, timeout_s: float) -> ToolCallRequested:
    args = json.dumps({"doc": "d1", "timeout_s": timeout_s})
    return ToolCallRequested(
        envelope=envelope(run_id="run-1"),
        call_id=call_id,
        tool="review",
        arguments_json=args,
        arguments_hash=arguments_hash(args),
        timeout_ms=5000,
        max_attempts=2,
    )


def _executor(now: datetime) -> ToolExecutor:
    breakers = BreakerRegistry("tool", BreakerPolicy(failure_threshold=50, cooldown_s=60))
    return ToolExecutor({"review": review}, breakers, wall_clock=lambda: now)


def test_a_tool_awaiting_a_callback_is_answered_with_its_derived_callback_id() -> None:
    waiting = asyncio.run(_executor(T0).execute(_review_call("call-9", 3600)))
    assert isinstance(waiting, ToolCallWaiting)
    assert waiting.callback_id == derived_id("call-9", "callback")
    assert handed_out[waiting.callback_id] == 1, "the tool was told the same id"
    assert waiting.expires_at == T0 + timedelta(hours=1)
    assert waiting.envelope.occurred_at == T0
    again = asyncio.run(_executor(T0 + timedelta(seconds=5)).execute(_review_call("call-9", 3600)))
    assert isinstance(again, ToolCallWaiting)
    assert (again.envelope.event_id, again.callback_id) == (
        waiting.envelope.event_id,
        waiting.callback_id,
    )


def test_a_wait_without_a_usable_timeout_fails_the_call() -> None:
    failed = asyncio.run(_executor(T0).execute(_review_call("call-10", 0)))
    assert isinstance(failed, ToolCallFailed)
    assert failed.error_class == "WorkerError"
    with pytest.raises(WorkerError):
        AwaitCallback(timeout_s=float("nan"))
