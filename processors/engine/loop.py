"""The processor engine: the pure state machine, driven over Kafka with confluent-kafka.

Per batch: consume, decode, ``transition`` each event with its agent's state. Then
  1. write each changed agent's state to the compacted ``agent.state`` changelog, together with
     the outputs its events emitted (the outbox), and wait for the acknowledgements;
  2. produce those outputs (and any dead letters) and wait again;
  3. mark the changelog partitions as delivered (a ``ChangelogMarker``);
  4. commit the input offsets.
A crash before 1 re-runs the batch from the same restored state: the same outputs with the same
event ids. A crash after 1 restores a state that already records the inputs as applied (so they
are no-ops when re-consumed) and re-sends the unmarked outboxes, which consumers dedupe. The
state never lags behind an output that left the processor, so a worker's result can never arrive
before the request the restored state knows of. Correctness never depends on transactions.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from agentstream.processors.core.machine import Duplicate, Rejected, transition
from agentstream.processors.core.spec import AgentSpec, Catalog, SpecVersions
from agentstream.processors.core.state import STATE_FORMAT, AgentState
from agentstream.processors.engine.restore import KeptStates, committed_offsets, read_changelog
from agentstream.schemas.errors import DeliveryError, ServiceUnavailableError
from agentstream.schemas.events import (
    AgentStateSnapshot,
    ChangelogMarker,
    Event,
    OutboxRecord,
)
from agentstream.schemas.limits import MAX_RECORD_BYTES
from agentstream.schemas.reasons import DeadLetterReason
from agentstream.streams import dlq
from agentstream.streams.admission import Refused, check_clock, check_placement
from agentstream.streams.consumer import group_config, records
from agentstream.streams.log_end import log_ends
from agentstream.streams.producer import Headers, message_headers, record_key
from agentstream.streams.replay_reader import partition_of
from agentstream.streams.runtime import metrics, tracing
from agentstream.streams.runtime.backoff import Backoff
from agentstream.streams.runtime.health import ASSIGNED, CAUGHT_UP, RESTORED, Readiness
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.service import STOP_TIMEOUT_S, BatchStats, Service
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import DecodeError, EventSerde
from agentstream.streams.topics import (
    APPROVAL_DECISIONS,
    CONTROL,
    DLQ,
    INPUTS,
    MODEL_RESULTS,
    STATE,
    TOOL_RESULTS,
    topic_for,
)

__all__ = [
    "FORWARDED_FROM",
    "PROCESSOR_INPUTS",
    "EngineStats",
    "ProcessorEngine",
]

log = get_logger(__name__)

#: Topics the processor consumes: everything that can advance an agent.
PROCESSOR_INPUTS = (INPUTS, MODEL_RESULTS, TOOL_RESULTS, APPROVAL_DECISIONS, CONTROL)


def _is_fatal(exc: BaseException) -> bool:
    """librdkafka's fatal errors (a fenced transactional producer: another instance took over)
    end the process; everything else is retried from the log."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, KafkaError) and error.fatal()


#: what a batch (or its recovery) may fail with while the broker is away or restarting: retried
#: from the log. ServiceUnavailableError too: a log-end query answered "broker handle destroyed"
#: while Apache Kafka restarted under a chaos run, and ended the processor.
_RECOVERABLE = (KafkaException, DeliveryError, ServiceUnavailableError)

#: the header of a record the processor forwarded to its agent's partition: where it came from
FORWARDED_FROM = "agentstream.forwarded_from"


@dataclass
class EngineStats(BatchStats):
    emitted: int = 0
    #: records sent on to their agent's partition (see ``_forward``)
    forwarded: int = 0
    restored_agents: int = 0
    #: batches that failed to reach the broker and were run again from the log
    recoveries: int = 0
    restored_partitions: set[int] = field(default_factory=set)


@dataclass
class _Batch:
    """What one batch changes: states, their outboxes, and dead letters."""

    states: dict[str, tuple[AgentState, int]] = field(default_factory=dict)
    outboxes: dict[str, list[OutboxRecord]] = field(default_factory=dict)
    dead_letters: list[tuple[bytes | None, bytes, Headers]] = field(default_factory=list)
    #: the traceparent of each outbox record, in the same order (headers stay out of the state)
    traces: dict[str, list[bytes]] = field(default_factory=dict)
    consumed: Counter[tuple[str, str]] = field(default_factory=Counter)
    produced: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: each agent's state before the batch (None: new), and the events applied to it since
    before: dict[str, AgentState | None] = field(default_factory=dict)
    applied: dict[str, list[tuple[Message, Event]]] = field(default_factory=dict)
    #: records that arrived on another partition than their agent's, for their agent's
    forwards: list[tuple[str, int, bytes | None, bytes, Headers]] = field(default_factory=list)


class ProcessorEngine(Service):
    """One processor instance; several share the partitions through a consumer group."""

    name = "processor"

    def __init__(
        self,
        settings: Settings,
        spec: AgentSpec | SpecVersions | Catalog,
        *,
        serde: EventSerde,
        group_id: str = "agentstream-processor",
        batch_size: int = 1000,
        poll_timeout: float = 0.2,
        instance_id: str | None = None,
        transactional: bool = False,
    ) -> None:
        self.settings = settings
        self.catalog = Catalog.of(spec)  # once, not per event
        self.serde = serde
        self.group_id = group_id
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        super().__init__(Readiness(ASSIGNED, RESTORED, CAUGHT_UP))
        self.stats = EngineStats()
        self._traces = tracing.TraceMemory()
        self._states: dict[int, dict[str, AgentState]] = {}
        self._input_topics = [settings.topic(t.name) for t in PROCESSOR_INPUTS]
        # What each input topic may carry: a result on the inputs topic (say) is dead-lettered
        # as the projector does, or the state and the read models would disagree about it.
        self._carries = {settings.topic(t.name): t.value_types for t in PROCESSOR_INPUTS}
        self._state_topic = settings.topic(STATE.name)
        self._dlq_topic = settings.topic(DLQ.name)
        self._delivery_errors: list[str] = []
        self._snapshot_offsets: dict[int, int] = {}
        self._producer = Producer(
            {
                **settings.kafka_config(),
                "enable.idempotence": True,
                "acks": "all",
                # Each batch is flushed as soon as it is produced, so lingering buys no larger
                # requests, only later acks (measured at 100 runs/s: 27 -> 20 ms per hop, p50).
                "linger.ms": 0,
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": 500_000,
                # A stable transactional id fences a zombie twin of a static member, and a
                # restarted one aborts its predecessor's open transaction at once. A member
                # without one that crashes leaves its transaction open, holding back every
                # read_committed reader of its partitions until the broker aborts it at this
                # timeout. Not shorter: a transaction that outlives it (the broker restarting
                # under it takes ~15 s here) is aborted with an epoch bump, which fences the
                # live producer for good (seen at 10 s).
                **(
                    {
                        "transactional.id": f"{group_id}-{instance_id or uuid.uuid4()}",
                        "transaction.timeout.ms": 60_000,
                    }
                    if transactional
                    else {}
                ),
            }
        )
        self.transactional = transactional
        if transactional:
            self._producer.init_transactions(30)
        self._kept = KeptStates()
        # Reads the group's committed offsets only; never joins the group.
        self._offsets = Consumer(
            {
                **settings.kafka_config(),
                "group.id": group_id,
                "isolation.level": "read_uncommitted",
                "enable.auto.commit": False,
            }
        )
        # Co-partitioned: an agent's partition of every input topic comes to the same instance,
        # so its model, tool and approval results reach the instance holding its state.
        self._consumer = Consumer(
            group_config(
                settings,
                group_id,
                instance_id=instance_id,
                low_latency=True,
                extra=metrics.lag_reporting("processor", self.readiness.update_lag),
            )
        )

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, *, until: Callable[[], bool] | None = None) -> EngineStats:
        """Process batches until ``stop()`` (or SIGTERM), or until ``until()`` holds."""
        self._consumer.subscribe(
            self._input_topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info("processor_started", group=self.group_id, topics=self._input_topics)
        try:
            while not self.stop_requested and not (until and until()):
                try:
                    self.process_batch()
                except _RECOVERABLE as exc:
                    if _is_fatal(exc):
                        raise
                    self._recover(exc)
        finally:
            self._close()
        return self.stats

    def _recover(self, failure: BaseException) -> None:
        """A batch failed to reach the broker (it restarts, a transaction was aborted, an
        acknowledgement timed out): go back to what the log holds, as a restart would, without
        one. The in-memory states may be ahead of the changelog, so every partition is restored
        from it and consumption continues from the committed offsets; the batch runs again and
        yields the same outputs with the same event ids."""
        self.stats.recoveries += 1
        log.warning("batch_failed", error=str(failure), transactional=self.transactional)
        self.readiness.set(RESTORED, False)
        backoff = Backoff(initial=0.5, maximum=5.0)
        for attempt in itertools.count(1):
            if self.stop_requested:
                return
            try:
                self._reset_to_log()
            except _RECOVERABLE as exc:
                if _is_fatal(exc):
                    raise
                pause = backoff.next_delay()
                log.warning("recovery_retry", attempt=attempt, error=str(exc), pause_s=pause)
                self.wait(pause)
                continue
            log.info("batch_recovered", attempts=attempt)
            self.readiness.set(RESTORED)
            return

    def _reset_to_log(self) -> None:
        if self.transactional:
            # An abortable transaction must be aborted before the next one may begin; with no
            # transaction open this raises, which is fine.
            with contextlib.suppress(KafkaException):
                self._producer.abort_transaction(30)
        self._delivery_errors.clear()
        self._snapshot_offsets.clear()
        assignment = self._consumer.assignment()
        partitions = {tp.partition for tp in assignment}
        self._states.clear()
        self._kept.clear()
        restored, _resent = self._restore(partitions)
        self._states.update(restored)
        for tp in committed_offsets(self._offsets, assignment):
            self._consumer.seek(tp)

    def _close(self) -> None:
        try:
            self._consumer.close()  # leaves the group so partitions move at once
        finally:
            self._offsets.close()
            self._producer.flush(STOP_TIMEOUT_S)
        log.info(
            "processor_stopped",
            **{k: v for k, v in vars(self.stats).items() if k != "restored_partitions"},
        )

    # -- rebalancing -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        new = {tp.partition for tp in partitions} - set(self._states)
        taken = self._kept.take_back(new, self._changelog_ends)
        self._states.update(taken)
        new -= set(taken)
        if new:
            self.readiness.set(RESTORED, False)
            started = time.monotonic()
            restored, resent = self._restore(new)
            agents = sum(len(s) for s in restored.values())
            self.stats.restored_agents += agents
            self.stats.restored_partitions |= new
            self._states.update(restored)
            log.info(
                "partitions_restored",
                partitions=sorted(new),
                agents=agents,
                outbox_resent=resent,
                seconds=round(time.monotonic() - started, 3),
            )
        consumer.assign(committed_offsets(self._offsets, partitions))
        self.readiness.set(ASSIGNED)
        self.readiness.set(RESTORED)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """An eager rebalance revokes every partition, most of which come straight back: their
        states are kept aside with their changelog's end, so they need no restore if nobody
        else wrote the changelog meanwhile."""
        revoked = {tp.partition for tp in partitions}
        try:
            consumer.unassign()
            # Markers of the last batch are still on their way; the end must include them.
            self._producer.flush(STOP_TIMEOUT_S)
            ends = self._changelog_ends(revoked & set(self._states))
        except (KafkaException, ServiceUnavailableError):
            # While the consumer closes, librdkafka refuses these calls; nothing is kept.
            ends = {}
        for partition in revoked:
            states = self._states.pop(partition, None)
            if states is not None and partition in ends:
                self._kept.keep(partition, ends[partition], states)
        self.readiness.set(ASSIGNED, False)
        log.info("partitions_revoked", partitions=sorted(revoked))

    def _changelog_ends(self, partitions: set[int]) -> dict[int, int]:
        """The end of each non-empty changelog partition (an empty one has nothing to keep)."""
        places = [(self._state_topic, p) for p in partitions]
        return {p: end for (_t, p), end in log_ends(self._consumer, places, timeout=10).items()}

    def _restore(self, partitions: set[int]) -> tuple[dict[int, dict[str, AgentState]], int]:
        """The last snapshot of each agent wins; outboxes written after their partition's last
        marker are sent again, then the partitions are marked."""
        found = read_changelog(self.settings, self.serde, self._state_topic, partitions)
        self._begin()
        resent = 0
        for partition, changelog in found.items():
            for agent_id, outbox in changelog.undelivered():
                for record in outbox:
                    self._produce(record.topic, (record.key or agent_id).encode(), record.value)
                    resent += 1
            if changelog.last_snapshot_offset > changelog.marked_through:
                self._snapshot_offsets[partition] = changelog.last_snapshot_offset
        self._await_deliveries("re-sent outboxes")
        self._write_markers()
        self._commit([])
        return {p: c.states for p, c in found.items()}, resent

    # -- the batch -------------------------------------------------------------------------

    def _next_messages(self) -> list[Message]:
        """What is already fetched, up to a batch; when nothing is, wait for the first record
        only. A batch call blocks until the batch is full or the timeout passes, which at low
        load would add the whole poll timeout to every hop of every run."""
        messages = self._consumer.consume(self.batch_size, 0)
        if not messages:
            messages = self._consumer.consume(1, self.poll_timeout)
            if messages and self.batch_size > 1:
                messages += self._consumer.consume(self.batch_size - 1, 0)
        return messages

    def process_batch(self) -> int:
        messages = self._next_messages()
        if not messages:
            return 0
        started = time.perf_counter()
        offsets: dict[tuple[str, int], int] = {}
        batch = _Batch()
        for msg in records(messages):
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            offsets[(topic, partition)] = offset + 1
            self.stats.consumed += 1
            self._handle(msg, partition, batch)
        transitioned = time.perf_counter()
        snapshots = {
            agent_id: (self._snapshot(state, batch.outboxes.get(agent_id, [])), partition)
            for agent_id, (state, partition) in batch.states.items()
        }
        for agent_id, (value, partition) in list(snapshots.items()):
            if len(value) > MAX_RECORD_BYTES:
                del snapshots[agent_id]
                self._refuse_oversized(batch, agent_id, partition, len(value))
        self._begin()
        for agent_id, (value, partition) in snapshots.items():
            # The partition of the input, not the partitioner's choice: restore reads exactly
            # the changelog partitions matching the assigned input partitions.
            self._produce(
                self._state_topic,
                agent_id.encode(),
                value,
                partition=partition,
                on_delivery=self._on_snapshot_delivery,
            )
        self._await_deliveries("state snapshots")
        self._failpoint("after_snapshots")
        for agent_id, outbox in batch.outboxes.items():
            traces = batch.traces[agent_id]
            for record, traceparent in zip(outbox, traces, strict=True):
                self._produce(
                    record.topic,
                    (record.key or agent_id).encode(),
                    record.value,
                    headers=[(tracing.TRACEPARENT, traceparent)],
                )
        for key, value, headers in batch.dead_letters:
            self._produce(self._dlq_topic, key, value, headers=headers)
        for topic, home, key, value, headers in batch.forwards:
            self._produce(topic, key, value, headers=headers, partition=home)
        self._await_deliveries("outputs")
        self._failpoint("after_outputs")
        self._write_markers()
        self._commit([TopicPartition(t, p, o) for (t, p), o in offsets.items()])
        self.stats.batches += 1
        self._observe(batch, len(messages), started, transitioned)
        return len(messages)

    def _observe(self, batch: _Batch, count: int, started: float, transitioned: float) -> None:
        """Metrics once per batch, after its offsets are committed."""
        metrics.count_batch(metrics.EVENTS_CONSUMED, "processor", batch.consumed)
        metrics.count_batch(metrics.EVENTS_PRODUCED, "processor", batch.produced)
        metrics.TRANSITION_SECONDS.labels("processor").observe((transitioned - started) / count)
        metrics.BATCH_SECONDS.labels("processor").observe(time.perf_counter() - started)

    def _begin(self) -> None:
        if self.transactional:
            self._producer.begin_transaction()

    def _commit(self, offsets: list[TopicPartition]) -> None:
        """Commit input offsets: inside the producer's transaction when transactions are on
        (atomic on Apache Kafka), else as a plain group commit after every acknowledgement."""
        if self.transactional:
            if offsets:
                self._producer.send_offsets_to_transaction(
                    offsets, self._consumer.consumer_group_metadata(), 30
                )
            self._producer.commit_transaction(60)
        elif offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)

    def _handle(self, msg: Message, partition: int, batch: _Batch) -> None:
        topic = msg.topic() or ""
        try:
            event = self.serde.decode(topic, msg.value())
        except DecodeError as exc:
            self._dead_letter(batch, msg, exc.error_class, str(exc))
            return
        try:
            check_placement(event, topic, self._carries.get(topic, ()), msg.key())
            if isinstance(event, Event):
                check_clock(event, msg.timestamp())
        except Refused as refused:
            self._dead_letter(batch, msg, refused.error_class, str(refused), refused.event)
            return
        assert isinstance(event, Event)  # every type the processor's inputs carry is one
        batch.consumed[(topic, type(event).__name__)] += 1
        agent_id = event.envelope.agent_id
        home = partition_of(agent_id, self.settings.partitions)
        if home != partition:
            self._forward(batch, msg, home)
            return
        states = self._states.setdefault(partition, {})
        decision = transition(states.get(agent_id), event, self.catalog)
        if isinstance(decision, Duplicate):
            self.stats.duplicates += 1
            return
        if isinstance(decision, Rejected):
            self._dead_letter(batch, msg, decision.error_class, decision.reason, event)
            return
        self.stats.applied += 1
        if agent_id not in batch.before:
            batch.before[agent_id] = states.get(agent_id)
        batch.applied.setdefault(agent_id, []).append((msg, event))
        states[agent_id] = decision.state
        batch.states[agent_id] = (decision.state, partition)
        outbox = batch.outboxes.setdefault(agent_id, [])
        traces = batch.traces.setdefault(agent_id, [])
        parent = self._traces.resolve(
            event.envelope.correlation_id, tracing.traceparent_of(msg.headers())
        )
        for emitted in decision.emits:
            topic_name = self.settings.topic(topic_for(type(emitted)).name)
            key = emitted.envelope.agent_id
            outbox.append(
                OutboxRecord(
                    topic=topic_name,
                    value=self.serde.encode(topic_name, emitted),
                    key=None if key == agent_id else key,
                )
            )
            traces.append(tracing.child_span(type(emitted).__name__, parent))
            batch.produced[(topic_name, type(emitted).__name__)] += 1
            self.stats.emitted += 1

    def _forward(self, batch: _Batch, msg: Message, home: int) -> None:
        """A record keyed by its agent but on another partition than murmur2 puts it (a producer
        that kept its client's default partitioner, librdkafka's ``consistent_random`` say):
        the agent's state and results live on its murmur2 partition, so the record is sent
        there, as it is, with a header saying where it came from, and applied when it arrives.
        Forwarded again after a crash, it is a duplicate the state machine drops."""
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        origin = f"{topic}[{partition}]@{offset}".encode()
        headers = [*message_headers(msg), (FORWARDED_FROM, origin)]
        batch.forwards.append((topic, home, msg.key(), msg.value() or b"", headers))
        self.stats.forwarded += 1
        log.info("record_forwarded", topic=topic, partition=partition, offset=offset, to=home)

    def _snapshot(self, state: AgentState, outbox: list[OutboxRecord]) -> bytes:
        snapshot = AgentStateSnapshot(
            agent_id=state.agent_id,
            tenant_id=state.tenant_id,
            version=state.version,
            last_event_id=state.last_event_id,
            state_json=state.to_json(),
            state_format=STATE_FORMAT,
            updated_at=state.updated_at or datetime.now(UTC),
            outbox=outbox,
        )
        return self.serde.encode(self._state_topic, snapshot)

    def _refuse_oversized(self, batch: _Batch, agent_id: str, partition: int, size: int) -> None:
        """A state that no broker would store (an agent holding too much text) must not stop
        the partition: the agent goes back to its state before the batch, and the events that
        grew it are dead-lettered with the reason, to be redriven once it holds less."""
        before = batch.before.get(agent_id)
        states = self._states.setdefault(partition, {})
        if before is None:
            states.pop(agent_id, None)
        else:
            states[agent_id] = before
        del batch.states[agent_id]
        batch.outboxes.pop(agent_id, None)
        batch.traces.pop(agent_id, None)
        refused = batch.applied.pop(agent_id, [])
        self.stats.applied -= len(refused)
        log.warning("state_too_large", agent_id=agent_id, bytes=size, events=len(refused))
        for msg, event in refused:
            self._dead_letter(
                batch,
                msg,
                DeadLetterReason.STATE_TOO_LARGE,
                f"applied with the rest of its batch, agent {agent_id}'s state snapshot would be "
                f"{size:,} bytes, over the {MAX_RECORD_BYTES:,}-byte record limit; the agent "
                "goes on from its state before",
                event,
            )

    def _failpoint(self, name: str) -> None:
        """Crash tests: die like a SIGKILL at a named point of batch N (off unless set)."""
        wanted = os.environ.get("AGENTSTREAM_FAILPOINT", "")
        if wanted.partition(":")[0] == name and self.stats.batches + 1 >= int(
            wanted.partition(":")[2] or 1
        ):
            log.warning("failpoint", name=name, batch=self.stats.batches + 1)
            os._exit(137)

    def _on_snapshot_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))
            return
        partition, offset = msg.partition() or 0, msg.offset() or 0
        if offset > self._snapshot_offsets.get(partition, -1):
            self._snapshot_offsets[partition] = offset

    def _write_markers(self) -> None:
        """Record that every outbox up to the latest snapshot of each partition went out. Not
        awaited: a lost marker only means those outboxes are re-sent (and deduped) on restore."""
        for partition, offset in self._snapshot_offsets.items():
            marker = ChangelogMarker(
                partition=partition,
                through_offset=offset,
                written_at=datetime.now(UTC),
                source=self.group_id,
            )
            self._produce(
                self._state_topic,
                (record_key(marker) or "").encode(),
                self.serde.encode(self._state_topic, marker),
                partition=partition,
            )
        self._snapshot_offsets.clear()

    def _dead_letter(
        self,
        batch: _Batch,
        msg: Message,
        error_class: DeadLetterReason,
        reason: str,
        event: Event | None = None,
    ) -> None:
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        letter = dlq.letter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=msg.key(),
            value=msg.value(),
            headers=message_headers(msg),
            reason=reason,
            error_class=error_class,
            source="processor",
            event=event,
        )
        log.warning(
            "dead_letter",
            topic=topic,
            partition=partition,
            offset=offset,
            error_class=error_class,
            reason=letter.reason,
        )
        batch.dead_letters.append(
            (msg.key(), self.serde.encode(self._dlq_topic, letter), dlq.headers_for(letter))
        )
        self.stats.dead_lettered += 1

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        headers: Headers | None = None,
        partition: int = -1,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        wire_headers: list[tuple[str, str | bytes | None]] = list(headers or [])
        callback = on_delivery or self._on_delivery
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=partition,
                    headers=wire_headers,
                    on_delivery=callback,
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    def _await_deliveries(self, what: str) -> None:
        remaining = self._producer.flush(60)
        if remaining or self._delivery_errors:
            errors, self._delivery_errors = self._delivery_errors, []
            # Without every acknowledgement the batch must not be committed: stop, let the
            # group hand the partitions on, and the batch is processed again.
            raise DeliveryError(f"{what} not acknowledged ({remaining} pending): {errors[:3]}")

    def states(self) -> dict[str, AgentState]:
        """Every agent state this instance holds (for tests and inspection)."""
        return {agent: state for states in self._states.values() for agent, state in states.items()}
