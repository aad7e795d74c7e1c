"""The approval timer: emits ApprovalExpired for every approval request that has no decision
by its ``expires_at``; the state machine then treats the call like a denied one.

It keeps no state of its own. On every partition assignment it reads the approval requests,
the decisions and the outcomes of its partitions from the beginning (all three topics are
co-partitioned, and the range assignor gives one member the same partition of each), and it
fires a partition's timers only once it has read all three to their end, so an expiry it
already sent before a restart is seen as a decision instead of being sent again. The expiry
is stamped with the deadline and has an id derived from the call, so even a second emission
is a duplicate the processor ignores.

A small confluent-kafka service rather than a Faust timer: it needs to replay from the
beginning on every assignment and to know when each partition has been read to its end,
which librdkafka's end-of-partition events give directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from agentstream.processors.control.approvals import expire
from agentstream.schemas.events import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    AvroRecord,
    RunCompleted,
    RunFailed,
)
from agentstream.streams.consumer import group_config
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime import metrics
from agentstream.streams.runtime.health import ASSIGNED, CAUGHT_UP, Readiness
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.service import Service
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import DecodeError, EventSerde, registry_client
from agentstream.streams.topics import APPROVAL_DECISIONS, APPROVAL_REQUESTS, OUTCOMES

__all__ = [
    "DEFAULT_GROUP",
    "ApprovalTimer",
    "TimerStats",
]

log = get_logger(__name__)

DEFAULT_GROUP = "agentstream-approval-timer"


@dataclass
class _Partition:
    """What one partition number holds across the three topics."""

    pending: dict[str, ApprovalRequested] = field(default_factory=dict)
    # Decisions read before their request (the topics are read side by side).
    decided: set[str] = field(default_factory=set)
    ended_runs: set[str] = field(default_factory=set)
    at_end: set[str] = field(default_factory=set)


@dataclass
class TimerStats:
    expired: int = 0
    assignments: int = 0


class ApprovalTimer(Service):
    name = "timer"

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str = DEFAULT_GROUP,
        serde: EventSerde | None = None,
        tick_s: float = 0.2,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.serde = serde or EventSerde(registry_client(settings.require_schema_registry_url()))
        # Caught up: every assigned partition replayed to its end on all three topics.
        super().__init__(Readiness(ASSIGNED, CAUGHT_UP))
        self.stats = TimerStats()
        self._tick_s = tick_s
        self._clock = clock
        self._topics = [
            settings.topic(t.name) for t in (APPROVAL_REQUESTS, APPROVAL_DECISIONS, OUTCOMES)
        ]
        self._partitions: dict[int, _Partition] = {}
        self._started_logged = False

    def run(self) -> TimerStats:
        consumer = Consumer(
            group_config(
                self.settings,
                self.group_id,
                extra={"enable.partition.eof": True},
            )
        )
        consumer.subscribe(
            self._topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        with AgentStreamProducer(self.settings, self.serde) as producer:
            try:
                while not self.stop_requested:
                    for msg in consumer.consume(500, self._tick_s):
                        self._read(msg)
                    self._fire(producer)
            finally:
                consumer.close()
        log.info("approval_timer_stopped", **vars(self.stats))
        return self.stats

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = OFFSET_BEGINNING
            self._partitions.setdefault(tp.partition, _Partition())
        consumer.assign(partitions)
        self.stats.assignments += 1
        self.readiness.set(ASSIGNED, bool(self._partitions))
        self.readiness.set(CAUGHT_UP, False)
        log.info(
            "timer_partitions_assigned", partitions=sorted({tp.partition for tp in partitions})
        )
        if not self._started_logged:
            self._started_logged = True
            log.info("worker_started", worker="approval_timer", group=self.group_id)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.unassign()
        # Whoever gets these partitions next replays them; so do we if they come back.
        for tp in partitions:
            self._partitions.pop(tp.partition, None)

    def _read(self, msg: Message) -> None:
        partition = self._partitions.get(msg.partition() or 0)
        if partition is None:
            return
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                partition.at_end.add(msg.topic() or "")
            else:
                log.warning("consume_error", error=str(error))
            return
        try:
            record = self.serde.decode(msg.topic() or "", msg.value())
        except DecodeError:
            return  # the processor dead-letters bad decisions; nothing to time here
        replaying = len(partition.at_end) < len(self._topics)
        _apply(partition, record, replaying=replaying)

    def _fire(self, producer: AgentStreamProducer) -> None:
        now = self._clock()
        self.readiness.set(
            CAUGHT_UP, all(len(p.at_end) >= len(self._topics) for p in self._partitions.values())
        )
        for number, partition in self._partitions.items():
            if len(partition.at_end) < len(self._topics):
                continue  # still replaying: a decision may yet turn up
            partition.ended_runs.clear()
            due = [r for r in partition.pending.values() if r.expires_at <= now]
            for request in sorted(due, key=lambda r: r.expires_at):
                producer.send(expire(request))
                del partition.pending[request.call_id]
                self.stats.expired += 1
                metrics.APPROVALS_EXPIRED.inc()
                log.info(
                    "approval_expired",
                    partition=number,
                    call_id=request.call_id,
                    agent_id=request.envelope.agent_id,
                    run_id=request.envelope.run_id,
                    expires_at=request.expires_at.isoformat(),
                    late_ms=int((now - request.expires_at).total_seconds() * 1000),
                )

    def pending(self) -> dict[str, ApprovalRequested]:
        """Every request this instance is timing (for tests and inspection)."""
        return {c: r for p in self._partitions.values() for c, r in p.pending.items()}


def _apply(partition: _Partition, record: AvroRecord, *, replaying: bool) -> None:
    if isinstance(record, ApprovalRequested):
        if record.call_id in partition.decided:
            partition.decided.discard(record.call_id)
        elif record.envelope.run_id not in partition.ended_runs:
            partition.pending[record.call_id] = record
    elif isinstance(record, ApprovalGranted | ApprovalDenied | ApprovalExpired):
        if partition.pending.pop(record.call_id, None) is None:
            partition.decided.add(record.call_id)
    elif isinstance(record, RunCompleted | RunFailed) and record.envelope.run_id:
        # A run that ended (its deadline passed) has nothing left to decide.
        run_id = record.envelope.run_id
        if replaying:
            # Only a replay reads an outcome before its run's requests; live, the processor
            # sends the request first.
            partition.ended_runs.add(run_id)
        for call_id in [c for c, r in partition.pending.items() if r.envelope.run_id == run_id]:
            del partition.pending[call_id]
