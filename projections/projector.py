"""The projector: consumes every agent topic and keeps the PostgreSQL read models.

Exactly-once into PostgreSQL without Kafka transactions: each batch's rows and the next offset of
every partition in it commit in one database transaction (see :mod:`.writer`), and a partition,
when assigned, starts from its stored offset. Kafka's own committed offsets are written after each
batch only so that standard tools can show the lag; they are never read.

While one batch is written (PostgreSQL working in its own process) the next one is consumed and
decoded. If the database (or the registry, or the DLQ) fails, the batch rolls back, every
partition is rewound to its stored offset and the projector waits with exponential backoff, then
continues from there: nothing is skipped and nothing is applied twice.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from agentstream.projections.database import DEFAULT_SCHEMA
from agentstream.projections.intake import Intake, Prepared, left_to_consumers
from agentstream.projections.writer import ApplyResult, BatchWriter, OffsetsMoved
from agentstream.schemas.errors import AgentStreamError
from agentstream.streams.consumer import group_config, records
from agentstream.streams.dlq import DeadLetterSink
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime import metrics
from agentstream.streams.runtime.backoff import Backoff
from agentstream.streams.runtime.gc_tuning import collect_rarely
from agentstream.streams.runtime.health import ASSIGNED, CAUGHT_UP, RESTORED, Readiness
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.service import BatchStats, Service
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topics import (
    APPROVAL_DECISIONS,
    APPROVAL_REQUESTS,
    CONTROL,
    INPUTS,
    MODEL_CALLS,
    MODEL_RESULTS,
    OUTCOMES,
    TIMERS,
    TOOL_CALLS,
    TOOL_RESULTS,
    TopicSpec,
)

__all__ = [
    "PROJECTED_TOPICS",
    "SOURCE",
    "TRANSIENT",
    "Key",
    "Projector",
    "ProjectorStats",
    "projected_topics",
    "tune_for_batches",
]

log = get_logger(__name__)

#: Every agent topic; not the state changelog (the processor's) nor the DLQ.
PROJECTED_TOPICS: tuple[TopicSpec, ...] = (
    INPUTS,
    MODEL_CALLS,
    MODEL_RESULTS,
    TOOL_CALLS,
    TOOL_RESULTS,
    APPROVAL_REQUESTS,
    APPROVAL_DECISIONS,
    OUTCOMES,
    CONTROL,
    TIMERS,
)
SOURCE = "projector"
#: Failures that roll a batch back and pause the projector, as opposed to a bad record.
TRANSIENT = (psycopg.Error, AgentStreamError, KafkaException)
_T = TypeVar("_T")
Key = tuple[str, int]


def projected_topics(settings: Settings) -> dict[str, TopicSpec]:
    """Physical topic name -> its spec, for every topic the projector consumes."""
    return {settings.topic(spec.name): spec for spec in PROJECTED_TOPICS}


def tune_for_batches() -> None:
    """For a process that runs a projector (or a rebuild).

    A batch keeps thousands of short-lived objects alive, which the default collector walks
    many times per batch (measured: it more than doubled the cost of decoding an event); see
    ``collect_rarely``. And the writer thread, which waits on PostgreSQL about ten times per
    batch, gets the interpreter back sooner from the decoding thread with a 1 ms switch interval
    instead of 5 ms.
    """
    collect_rarely()
    sys.setswitchinterval(0.001)


@dataclass
class ProjectorStats(BatchStats):
    skipped: int = 0
    failures: int = 0
    rewinds: int = 0


class _Retry(Exception):
    """Something outside the batch failed: rewind to the stored offsets, wait, try again."""


class Projector(Service):
    """One projector instance; several share the partitions through a consumer group."""

    name = "projector"

    def __init__(
        self,
        settings: Settings,
        *,
        schema: str = DEFAULT_SCHEMA,
        serde: EventSerde | None = None,
        group_id: str = "agentstream-projector",
        batch_size: int = 5000,
        poll_timeout: float = 0.2,
        instance_id: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.schema = schema
        self.group_id = group_id
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.backoff = backoff or Backoff()
        super().__init__(Readiness(ASSIGNED, RESTORED, CAUGHT_UP))
        self.stats = ProjectorStats()
        serde = serde or EventSerde(registry_client(settings.require_schema_registry_url()))
        self._specs = projected_topics(settings)
        self._producer = AgentStreamProducer(settings, serde)
        self._intake = Intake(
            serde, DeadLetterSink(self._producer, SOURCE), self._specs, left_to_consumers(settings)
        )
        self._writer = BatchWriter(settings.require_database_url(), schema)
        # The writer thread owns the database connection; the main thread consumes meanwhile.
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="projector-db")
        self._pending: Future[ApplyResult] | None = None
        #: the stored offset of each assigned partition: where its consumption continues
        self._expected: dict[Key, int] = {}
        #: partitions the group gave us that still wait for their stored offsets
        self._awaiting: set[Key] = set()
        self._consumer = Consumer(
            group_config(
                settings,
                group_id,
                instance_id=instance_id,
                extra=metrics.lag_reporting("projector", self.readiness.update_lag),
            )
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def run(self, *, until: Callable[[], bool] | None = None) -> ProjectorStats:
        """Project batches until ``stop()`` (or SIGTERM), or until ``until()`` holds."""
        self._consumer.subscribe(
            list(self._specs),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info(
            "projector_started", group=self.group_id, schema=self.schema, topics=list(self._specs)
        )
        try:
            while not self.stop_requested and not (until and until()):
                try:
                    self._step()
                except _Retry as exc:
                    self._recover(str(exc))
            try:
                self._finish_pending()
            except _Retry as exc:  # nothing lost: the next start resumes from the stored offsets
                log.warning("last_batch_not_committed", reason=str(exc))
        finally:
            self._close()
        return self.stats

    def _close(self) -> None:
        try:
            self._consumer.close()  # leaves the group so partitions move at once
        finally:
            try:
                self._db.submit(self._writer.close).result(30)
            finally:
                self._db.shutdown(wait=True)
                self._producer.close()
        self.stats.dead_lettered = self._intake.dead_lettered
        log.info("projector_stopped", **vars(self.stats))

    # -- one step ------------------------------------------------------------------------------

    def _step(self) -> None:
        if self._awaiting:
            self._assign_awaiting()
        messages = self._consumer.consume(self.batch_size, self.poll_timeout)
        prepared = self._prepare(messages)
        # computed while the previous batch is still being written
        batch = prepared.batch.with_rows() if prepared.batch.events else prepared.batch
        self._finish_pending()
        if batch.positions:
            self._pending = self._db.submit(
                self._apply_timed,
                batch,
                dict(self._expected),
                lambda refused: self._intake.dead_letter_unwritable(refused, prepared),
            )

    def _apply_timed(self, *args: Any) -> ApplyResult:
        """The writer's ``apply`` on the writer thread, timed for /metrics."""
        started = time.perf_counter()
        result = self._writer.apply(*args)
        metrics.PROJECTOR_COMMIT_SECONDS.observe(time.perf_counter() - started)
        metrics.PROJECTOR_BATCH_EVENTS.observe(result.applied + result.duplicates + result.skipped)
        return result

    def _prepare(self, messages: list[Message]) -> Prepared:
        prepared = Prepared()
        tally: Counter[tuple[str, str]] = Counter()
        for msg in records(messages):
            if (msg.topic() or "", msg.partition() or 0) not in self._expected:
                continue  # revoked meanwhile: its stored offset says where to resume
            self.stats.consumed += 1
            try:
                sourced = self._intake.take(msg)
                prepared.add(msg, sourced)
            except AgentStreamError as exc:  # the registry or the DLQ: not the record's fault
                raise _Retry(f"{type(exc).__name__}: {exc}") from exc
            tally[
                (sourced.topic, type(sourced.event).__name__)
                if sourced
                else (msg.topic() or "", "undecodable")
            ] += 1
        if tally:
            metrics.count_batch(metrics.EVENTS_CONSUMED, "projector", tally)
        return prepared

    def _finish_pending(self) -> None:
        if self._pending is None:
            return
        future, self._pending = self._pending, None
        try:
            result = future.result()
        except OffsetsMoved as moved:
            self._rewind(moved.stored)
            raise _Retry("the stored offsets moved behind this projector") from None
        except TRANSIENT as exc:
            self._run_db(self._writer.reset)
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        self._committed(result)

    def _committed(self, result: ApplyResult) -> None:
        down_for = self.backoff.reset()
        if down_for is not None:
            log.info("projector_recovered", after_s=round(down_for, 1))
        stats = self.stats
        stats.batches += 1
        stats.applied += result.applied
        stats.duplicates += result.duplicates
        stats.skipped += result.skipped
        for key, offset in result.positions.items():
            if key in self._expected:
                self._expected[key] = offset
        # For lag monitoring only: positions come from the database.
        offsets = [TopicPartition(t, p, o) for (t, p), o in result.positions.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as exc:
            log.debug("offset_commit_skipped", error=str(exc))

    # -- partitions ----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        try:
            stored = self._run_db(self._writer.stored_offsets)
        except TRANSIENT as exc:
            # Left unassigned: consuming from anywhere but the stored offset could skip records.
            log.warning("partitions_wait_for_database", count=len(keys), error=str(exc))
            self._run_db(self._writer.reset)
            self._awaiting |= keys
            self.readiness.set(RESTORED, False)
            return
        self._assign(consumer, keys, stored)

    def _assign(self, consumer: Consumer, keys: set[Key], stored: dict[Key, int]) -> None:
        positions = {key: stored.get(key, 0) for key in keys}
        self._expected.update(positions)
        # Eager assignment: the consumer's whole assignment is set at once.
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in self._expected.items()])
        self._awaiting -= keys
        self.readiness.set(ASSIGNED, bool(self._expected))
        self.readiness.set(RESTORED, not self._awaiting)
        log.info("partitions_assigned", count=len(keys), from_offsets=sum(positions.values()))

    def _assign_awaiting(self) -> None:
        try:
            stored = self._run_db(self._writer.stored_offsets)
        except TRANSIENT as exc:
            self._run_db(self._writer.reset)
            raise _Retry(f"stored offsets unreadable: {exc}") from exc
        self._assign(self._consumer, set(self._awaiting), stored)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        consumer.unassign()  # eager: every partition is revoked at once
        for key in keys:
            self._expected.pop(key, None)
        self._awaiting -= keys
        self.readiness.set(ASSIGNED, bool(self._expected))
        log.info("partitions_revoked", count=len(keys))

    def _rewind(self, stored: dict[Key, int]) -> None:
        """Continue every assigned partition from its stored offset. Re-assigning is the one way
        to move a partition that works whatever state its fetcher is in, and it drops whatever
        was fetched beyond."""
        keys = set(self._expected)
        if not keys:
            return
        self.stats.rewinds += 1
        positions = {key: stored.get(key, self._expected[key]) for key in keys}
        self._consumer.assign([TopicPartition(t, p, o) for (t, p), o in positions.items()])
        self._expected.update(positions)

    # -- failures ------------------------------------------------------------------------------

    def _recover(self, why: str) -> None:
        """Rewind to the stored offsets, wait, and let the loop try again."""
        self.stats.failures += 1
        if self._pending is not None:
            # A batch still in flight decides where the rewind goes: its offsets if it committed.
            future, self._pending = self._pending, None
            try:
                self._committed(future.result())
            except (*TRANSIENT, OffsetsMoved):
                self._run_db(self._writer.reset)
        try:
            self._rewind(dict(self._expected))
        except KafkaException as exc:
            log.warning("rewind_failed", error=str(exc))
        delay = self.backoff.next_delay()
        log.warning(
            "projector_paused",
            reason=why.splitlines()[0] if why else "",
            attempt=self.backoff.attempts,
            retry_in_s=round(delay, 2),
        )
        self.wait(delay)

    def _run_db(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the writer thread, the database connection's only user."""
        return self._db.submit(fn).result()
