"""What the timer worker knows of one partition: the approvals waiting for a decision and the
durable timers not yet fired, each by its deadline, read from the topics (pure: no Kafka here).

A partition is replayed from the beginning of every topic it reads before anything fires. While
replaying, the topics are read side by side, so a decision can come before its request, a
``TimerFired`` before its ``TimerSet``, an outcome before the timers of its run: those are kept
until the record they settle turns up. Once caught up, the worker's own ``ApprovalExpired`` and
``TimerFired`` come back after it dropped what they settle, and are ignored.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from agentstream.processors.control.approvals import takes_effect
from agentstream.schemas.events import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    AvroRecord,
    RunOutcome,
    TimerFired,
    TimerSet,
)

__all__ = [
    "RECENT_ENDED_RUNS",
    "Deadlines",
    "Due",
    "PartitionBook",
    "deadline_of",
]

T = TypeVar("T")
Due = ApprovalRequested | TimerSet
Decision = ApprovalGranted | ApprovalDenied | ApprovalExpired

#: Ended runs remembered once caught up: live, an outcome can still be read just before a
#: timer its run set earlier (two topics, one poll), never long before.
RECENT_ENDED_RUNS = 10_000


@dataclass(frozen=True)
class _Entry(Generic[T]):
    due: datetime
    run_id: str | None
    item: T


class Deadlines(Generic[T]):
    """Items by key, each due at a time: the earliest first, in O(log n); a removal by key or
    by run leaves its heap entry behind, skipped when it comes up."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry[T]] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._by_run: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def items(self) -> Iterator[T]:
        return (e.item for e in self._entries.values())

    def get(self, key: str) -> T | None:
        entry = self._entries.get(key)
        return entry.item if entry is not None else None

    def add(self, key: str, due: datetime, run_id: str | None, item: T) -> None:
        self.pop(key)
        self._entries[key] = _Entry(due, run_id, item)
        heapq.heappush(self._heap, (due, key))
        if run_id is not None:
            self._by_run.setdefault(run_id, set()).add(key)
        self._compact()

    def pop(self, key: str) -> T | None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        if entry.run_id is not None:
            keys = self._by_run.get(entry.run_id, set())
            keys.discard(key)
            if not keys:
                self._by_run.pop(entry.run_id, None)
        return entry.item

    def drop_run(self, run_id: str) -> int:
        keys = self._by_run.pop(run_id, set())
        for key in keys:
            self._entries.pop(key, None)
        return len(keys)

    def next_due(self) -> datetime | None:
        self._skip_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime) -> list[T]:
        """Every item due at ``now`` or before, earliest first, removed."""
        due: list[T] = []
        while (head := self.next_due()) is not None and head <= now:
            _, key = heapq.heappop(self._heap)
            item = self.pop(key)
            assert item is not None  # _skip_stale left a live head
            due.append(item)
        return due

    def _skip_stale(self) -> None:
        while self._heap:
            due, key = self._heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry.due == due:
                return
            heapq.heappop(self._heap)

    def _compact(self) -> None:
        # Settled items wait in the heap until their deadline, which can be days away.
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [(e.due, k) for k, e in self._entries.items()]
            heapq.heapify(self._heap)


@dataclass
class PartitionBook:
    """One partition number across the ``topics`` topics the worker reads."""

    topics: int
    approvals: Deadlines[ApprovalRequested] = field(default_factory=Deadlines)
    timers: Deadlines[TimerSet] = field(default_factory=Deadlines)
    at_end: set[str] = field(default_factory=set)
    _early_decisions: dict[str, list[Decision]] = field(default_factory=dict)
    _early_fired: set[str] = field(default_factory=set)
    # A dict as an insertion-ordered set: the oldest go first once caught up.
    _ended: dict[str, None] = field(default_factory=dict)

    @property
    def caught_up(self) -> bool:
        return len(self.at_end) >= self.topics

    def reached_end(self, topic: str) -> None:
        self.at_end.add(topic)
        if self.caught_up:
            # Whatever these were to settle would have been read by now.
            self._early_decisions.clear()
            self._early_fired.clear()
            self._forget_old_runs()

    def apply(self, record: AvroRecord) -> None:
        if isinstance(record, ApprovalRequested):
            self._on_request(record)
        elif isinstance(record, ApprovalGranted | ApprovalDenied | ApprovalExpired):
            self._on_decision(record)
        elif isinstance(record, TimerSet):
            self._on_timer(record)
        elif isinstance(record, TimerFired):
            if self.timers.pop(record.timer_id) is None and not self.caught_up:
                self._early_fired.add(record.timer_id)
        elif isinstance(record, RunOutcome):
            self._on_outcome(record)

    def due(self, now: datetime) -> list[Due]:
        """What is due at ``now``, earliest first, removed; nothing while replaying."""
        if not self.caught_up:
            return []
        due: list[Due] = [*self.approvals.pop_due(now), *self.timers.pop_due(now)]
        return sorted(due, key=deadline_of)

    def next_due(self) -> datetime | None:
        if not self.caught_up:
            return None
        return min(filter(None, (self.approvals.next_due(), self.timers.next_due())), default=None)

    def _on_request(self, request: ApprovalRequested) -> None:
        early = self._early_decisions.pop(request.call_id, [])
        if any(takes_effect(request, d) for d in early) or self._ended_run(request):
            return
        self.approvals.add(request.call_id, request.expires_at, request.envelope.run_id, request)

    def _on_decision(self, decision: Decision) -> None:
        pending = self.approvals.get(decision.call_id)
        if pending is None:
            if not self.caught_up:
                self._early_decisions.setdefault(decision.call_id, []).append(decision)
        elif takes_effect(pending, decision):
            self.approvals.pop(decision.call_id)

    def _on_timer(self, timer: TimerSet) -> None:
        if timer.timer_id in self._early_fired:
            self._early_fired.discard(timer.timer_id)
        elif not self._ended_run(timer):
            self.timers.add(timer.timer_id, timer.fire_at, timer.envelope.run_id, timer)

    def _on_outcome(self, outcome: RunOutcome) -> None:
        run_id = outcome.envelope.run_id
        if run_id is None:
            return
        # An ended run has nothing left to decide and nothing left to wake.
        self._ended[run_id] = None
        self.approvals.drop_run(run_id)
        self.timers.drop_run(run_id)
        if self.caught_up:
            self._forget_old_runs()

    def _ended_run(self, record: Due) -> bool:
        return record.envelope.run_id is not None and record.envelope.run_id in self._ended

    def _forget_old_runs(self) -> None:
        while len(self._ended) > RECENT_ENDED_RUNS:
            del self._ended[next(iter(self._ended))]


def deadline_of(item: Due) -> datetime:
    return item.expires_at if isinstance(item, ApprovalRequested) else item.fire_at
