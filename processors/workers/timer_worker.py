"""The timer worker: approval expiries and durable timers.

It emits :class:`ApprovalExpired` for every approval request that has no decision by its
``expires_at`` (the state machine then treats the call like a denied one), and
:class:`TimerFired` onto ``agent.control`` for every :class:`TimerSet` on ``agent.timers`` at its
``fire_at`` (a run's sleep ends, or a tool call's wait for its callback times out).

It keeps no state of its own. On every partition assignment it reads the approval requests, the
decisions, the timers, the control events and the outcomes of its partitions from the beginning
(all the topics are co-partitioned, and the range assignor gives one member the same partition
of each), and it fires a partition's deadlines only once it has read all of them to their end:
an expiry or a timer it already sent before a restart is read back and not sent again, and the
timers and approvals of a run that ended (completed, failed, cancelled) are dropped. Every
emission is stamped with its deadline and has an id derived from the call or the timer, so
even a second emission is a duplicate the processor ignores.

Deadlines wait in a heap per partition (timers can be days away); the loop blocks on the
consumer until the next one is due or a record arrives.

``clock_offset_s`` shifts the worker's "now", for drills and tests only: with an offset of
7200 a two-hour sleep ends at once. Its records carry that shifted time as their Kafka
timestamp, so the processor's clock check (occurred_at no later than a minute after the
record's timestamp) accepts them; the broker must accept timestamps that far ahead (Apache
Kafka 4 refuses those more than ``message.timestamp.after.max.ms``, an hour by default, ahead).

A small confluent-kafka service rather than a Faust timer: it needs to replay from the
beginning on every assignment and to know when each partition has been read to its end,
which librdkafka's end-of-partition events give directly.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from agentstream.processors.control.approvals import expire
from agentstream.processors.control.timers import fire
from agentstream.processors.workers.timer_book import Due, PartitionBook, deadline_of
from agentstream.schemas.errors import ConfigurationError, DeliveryError
from agentstream.schemas.events import ApprovalRequested, Event
from agentstream.streams.consumer import group_config
from agentstream.streams.producer import AgentStreamProducer, Delivery, wait_delivery
from agentstream.streams.runtime import metrics
from agentstream.streams.runtime.health import ASSIGNED, CAUGHT_UP, Readiness
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.service import Service
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import DecodeError, EventSerde, registry_client
from agentstream.streams.topics import (
    APPROVAL_DECISIONS,
    APPROVAL_REQUESTS,
    CONTROL,
    OUTCOMES,
    TIMERS,
)

__all__ = [
    "DEFAULT_GROUP",
    "TimerStats",
    "TimerWorker",
]

log = get_logger(__name__)

# The name it had when it only expired approvals: a rolling upgrade keeps one group.
DEFAULT_GROUP = "agentstream-approval-timer"
_TOPICS = (APPROVAL_REQUESTS, APPROVAL_DECISIONS, TIMERS, CONTROL, OUTCOMES)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class TimerStats:
    expired: int = 0
    fired: int = 0
    assignments: int = 0


class TimerWorker(Service):
    name = "timer"

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str = DEFAULT_GROUP,
        serde: EventSerde | None = None,
        max_wait_s: float = 0.5,
        clock: Callable[[], datetime] = _utc_now,
        clock_offset_s: float = 0.0,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.serde = serde or EventSerde(registry_client(settings.require_schema_registry_url()))
        # Caught up: every assigned partition replayed to its end on every topic.
        super().__init__(Readiness(ASSIGNED, CAUGHT_UP))
        self.stats = TimerStats()
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._offset = timedelta(seconds=clock_offset_s)
        self._topics = [settings.topic(t.name) for t in _TOPICS]
        self._partitions: dict[int, PartitionBook] = {}
        self._caught_up = False
        self._started_logged = False

    def now(self) -> datetime:
        """The worker's time: the clock, shifted by the drill offset."""
        return self._clock() + self._offset

    def run(self) -> TimerStats:
        if self._offset:
            log.warning("timer_clock_shifted", offset_s=self._offset.total_seconds())
        consumer = Consumer(
            group_config(self.settings, self.group_id, extra={"enable.partition.eof": True})
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
                    for msg in consumer.consume(500, self._wait_s()):
                        self._read(msg)
                    self._fire(producer)
            finally:
                consumer.close()
        log.info("timer_stopped", **vars(self.stats))
        return self.stats

    def _wait_s(self) -> float:
        """How long the consumer may block: until the next deadline, at most ``max_wait_s``
        (so a stop is noticed)."""
        due = [d for p in self._partitions.values() if (d := p.next_due()) is not None]
        if not due:
            return self._max_wait_s
        until = (min(due) - self.now()).total_seconds()
        return min(self._max_wait_s, max(0.0, until))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            tp.offset = OFFSET_BEGINNING
            self._partitions.setdefault(tp.partition, PartitionBook(len(self._topics)))
        consumer.assign(partitions)
        self.stats.assignments += 1
        self.readiness.set(ASSIGNED, bool(self._partitions))
        self._set_caught_up()
        log.info(
            "timer_partitions_assigned", partitions=sorted({tp.partition for tp in partitions})
        )
        if not self._started_logged:
            self._started_logged = True
            log.info("worker_started", worker="timer", group=self.group_id)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.unassign()
        # Whoever gets these partitions next replays them; so do we if they come back.
        for tp in partitions:
            self._partitions.pop(tp.partition, None)
        self._set_caught_up()

    def _read(self, msg: Message) -> None:
        book = self._partitions.get(msg.partition() or 0)
        if book is None:
            return
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                book.reached_end(msg.topic() or "")
                self._set_caught_up()
            else:
                log.warning("consume_error", error=str(error))
            return
        try:
            record = self.serde.decode(msg.topic() or "", msg.value())
        except DecodeError:
            return  # the processor dead-letters it; nothing to time here
        if isinstance(record, Event) and msg.key() != record.envelope.agent_id.encode():
            return  # so does it a record keyed by another agent
        book.apply(record)

    def _set_caught_up(self) -> None:
        caught_up = all(p.caught_up for p in self._partitions.values())
        self.readiness.set(CAUGHT_UP, caught_up)
        if caught_up and not self._caught_up and self._partitions:
            books = self._partitions.values()
            log.info(
                "timers_caught_up",
                partitions=sorted(self._partitions),
                approvals=sum(len(p.approvals) for p in books),
                timers=sum(len(p.timers) for p in books),
            )
        self._caught_up = caught_up and bool(self._partitions)

    def _fire(self, producer: AgentStreamProducer) -> None:
        now = self.now()
        sent: list[tuple[int, Due, Future[Delivery]]] = []
        for number, book in self._partitions.items():
            for item in book.due(now):
                event = expire(item) if isinstance(item, ApprovalRequested) else fire(item)
                # Stamped with this worker's (maybe shifted) time: the processor refuses an
                # event that says it happened well after its record was produced.
                sent.append((number, item, producer.send_async(event, timestamp=now)))
        for number, item, delivery in sent:
            self._delivered(delivery)
            self._fired(number, item, now)

    def _delivered(self, delivery: Future[Delivery]) -> None:
        try:
            wait_delivery(delivery)
        except DeliveryError as exc:
            if self._offset and "INVALID_TIMESTAMP" in str(exc):
                raise ConfigurationError(
                    f"the broker refuses records stamped {self._offset} ahead: {exc}",
                    hint="for a drill, raise message.timestamp.after.max.ms of the control and "
                    "approval-decisions topics above the offset",
                ) from exc
            raise

    def _fired(self, partition: int, item: Due, now: datetime) -> None:
        envelope = item.envelope
        late_ms = int((now - deadline_of(item)).total_seconds() * 1000)
        if isinstance(item, ApprovalRequested):
            self.stats.expired += 1
            metrics.APPROVALS_EXPIRED.inc()
            log.info(
                "approval_expired",
                partition=partition,
                call_id=item.call_id,
                agent_id=envelope.agent_id,
                run_id=envelope.run_id,
                expires_at=item.expires_at.isoformat(),
                late_ms=late_ms,
            )
            return
        self.stats.fired += 1
        log.info(
            "timer_fired",
            partition=partition,
            timer_id=item.timer_id,
            call_id=item.call_id,
            purpose=item.purpose.value,
            agent_id=envelope.agent_id,
            run_id=envelope.run_id,
            fire_at=item.fire_at.isoformat(),
            late_ms=late_ms,
        )
