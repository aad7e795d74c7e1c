"""The processor engine: the pure state machine, driven over Kafka with confluent-kafka.

Per batch: consume, decode, ``transition`` each event with its agent's state, produce every
emitted event (and every dead letter), wait for all acknowledgements, then write the changed
states to the compacted ``agent.state`` changelog, wait again, and only then commit the input
offsets. A crash anywhere in between re-runs the batch: states restored from the changelog
either already record the inputs as applied (a no-op) or re-emit the same outputs with the same
event ids (which every consumer dedupes). Correctness never depends on broker transactions.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)

from agentstream.processors.machine import transition
from agentstream.processors.spec import AgentSpec
from agentstream.processors.state import AgentState
from agentstream.schemas.errors import DeliveryError
from agentstream.schemas.events import AgentStateSnapshot, DeadLetter, Event, RecordHeader
from agentstream.streams import dlq
from agentstream.streams.logs import get_logger
from agentstream.streams.producer import Headers, message_headers
from agentstream.streams.serde import DecodeError, EventSerde
from agentstream.streams.settings import Settings
from agentstream.streams.topics import (
    APPROVAL_DECISIONS,
    DLQ,
    INPUTS,
    MODEL_RESULTS,
    STATE,
    TOOL_RESULTS,
    topic_for,
)

log = get_logger(__name__)

#: Topics the processor consumes: everything that can advance an agent.
PROCESSOR_INPUTS = (INPUTS, MODEL_RESULTS, TOOL_RESULTS, APPROVAL_DECISIONS)
SpecResolver = Callable[[str], AgentSpec]


@dataclass
class EngineStats:
    batches: int = 0
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    emitted: int = 0
    restored_agents: int = 0
    restored_partitions: set[int] = field(default_factory=set)


class ProcessorEngine:
    """One processor instance; several share the partitions through a consumer group."""

    def __init__(
        self,
        settings: Settings,
        spec: AgentSpec | SpecResolver,
        *,
        serde: EventSerde,
        group_id: str = "agentstream-processor",
        batch_size: int = 1000,
        poll_timeout: float = 0.2,
    ) -> None:
        self.settings = settings
        self._spec_for: SpecResolver = spec if callable(spec) else (lambda _agent: spec)
        self.serde = serde
        self.group_id = group_id
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.stats = EngineStats()
        self._stop = threading.Event()
        self._states: dict[int, dict[str, AgentState]] = {}
        self._input_topics = [settings.topic(t.name) for t in PROCESSOR_INPUTS]
        self._state_topic = settings.topic(STATE.name)
        self._dlq_topic = settings.topic(DLQ.name)
        self._delivery_errors: list[str] = []
        self._producer = Producer(
            {
                **settings.kafka_config(),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "partitioner": "murmur2_random",
                "queue.buffering.max.messages": 500_000,
            }
        )
        self._consumer = Consumer(
            {
                **settings.kafka_config(),
                "group.id": group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "partition.assignment.strategy": "cooperative-sticky",
            }
        )

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handle(_signum: int, _frame: FrameType | None) -> None:
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

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
            while not self._stop.is_set() and not (until and until()):
                self.process_batch()
        finally:
            self._close()
        return self.stats

    def _close(self) -> None:
        try:
            self._consumer.close()  # leaves the group so partitions move at once
        finally:
            self._producer.flush(30)
        log.info(
            "processor_stopped",
            **{k: v for k, v in vars(self.stats).items() if k != "restored_partitions"},
        )

    # -- rebalancing -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        new = {tp.partition for tp in partitions} - set(self._states)
        if new:
            started = time.monotonic()
            restored = self._restore(new)
            self.stats.restored_agents += sum(len(s) for s in restored.values())
            self.stats.restored_partitions |= new
            self._states.update(restored)
            log.info(
                "partitions_restored",
                partitions=sorted(new),
                agents=sum(len(s) for s in restored.values()),
                seconds=round(time.monotonic() - started, 3),
            )
        consumer.incremental_assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_unassign(partitions)
        still = {tp.partition for tp in consumer.assignment()}
        for partition in {tp.partition for tp in partitions} - still:
            self._states.pop(partition, None)
        log.info("partitions_revoked", partitions=sorted({tp.partition for tp in partitions}))

    def _restore(self, partitions: set[int]) -> dict[int, dict[str, AgentState]]:
        """Read the changelog partitions to their end; the last snapshot of each agent wins."""
        restored: dict[int, dict[str, AgentState]] = {p: {} for p in partitions}
        reader = Consumer(
            {
                **self.settings.kafka_config(),
                "group.id": f"{self.group_id}-restore",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        try:
            ends: dict[int, int] = {}
            for partition in partitions:
                low, high = reader.get_watermark_offsets(
                    TopicPartition(self._state_topic, partition), timeout=10
                )
                if high > low:
                    ends[partition] = high
            if not ends:
                return restored
            reader.assign([TopicPartition(self._state_topic, p, OFFSET_BEGINNING) for p in ends])
            while ends:
                for msg in reader.consume(10_000, 1.0):
                    partition = msg.partition() or 0
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            ends.pop(partition, None)
                        continue
                    self._restore_one(restored[partition], msg)
                    if (msg.offset() or 0) + 1 >= ends.get(partition, 0):
                        ends.pop(partition, None)
        finally:
            reader.close()
        return restored

    def _restore_one(self, states: dict[str, AgentState], msg: Message) -> None:
        value = msg.value()
        key = msg.key()
        if value is None:  # a tombstone forgets the agent
            if key is not None:
                states.pop(key.decode("utf-8", "replace"), None)
            return
        snapshot = self.serde.decode(msg.topic() or "", value)
        if isinstance(snapshot, AgentStateSnapshot):
            states[snapshot.agent_id] = AgentState.from_json(snapshot.state_json)

    # -- the batch -------------------------------------------------------------------------

    def process_batch(self) -> int:
        messages = self._consumer.consume(self.batch_size, self.poll_timeout)
        if not messages:
            return 0
        offsets: dict[tuple[str, int], int] = {}
        dirty: dict[str, tuple[AgentState, int]] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consume_error", error=str(error))
                continue
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            offsets[(topic, partition)] = offset + 1
            self.stats.consumed += 1
            self._handle(msg, partition, dirty)
        self._await_deliveries("outputs")
        for state, partition in dirty.values():
            self._produce_snapshot(state, partition)
        self._await_deliveries("state snapshots")
        if offsets:
            commit = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            self._consumer.commit(offsets=commit, asynchronous=False)
        self.stats.batches += 1
        return len(messages)

    def _handle(
        self, msg: Message, partition: int, dirty: dict[str, tuple[AgentState, int]]
    ) -> None:
        topic = msg.topic() or ""
        try:
            event = self.serde.decode(topic, msg.value())
        except DecodeError as exc:
            self._dead_letter(msg, exc.error_class, str(exc))
            return
        if not isinstance(event, Event):
            self._dead_letter(msg, "wrong_topic", f"{type(event).__name__} is not an agent event")
            return
        key = msg.key()
        agent_id = event.envelope.agent_id
        if key is None or key.decode("utf-8", "replace") != agent_id:
            self._dead_letter(
                msg,
                "key_mismatch" if key else "missing_key",
                f"key {key!r} must be the agent_id {agent_id!r}",
                event,
            )
            return
        states = self._states.setdefault(partition, {})
        decision = transition(states.get(agent_id), event, self._spec_for(agent_id))
        if decision.duplicate:
            self.stats.duplicates += 1
            return
        if decision.rejection is not None:
            self._dead_letter(msg, decision.rejection.error_class, decision.rejection.reason, event)
            return
        self.stats.applied += 1
        states[agent_id] = decision.state
        dirty[agent_id] = (decision.state, partition)
        for emitted in decision.emits:
            topic_name = self.settings.topic(topic_for(type(emitted)).name)
            self._produce(topic_name, agent_id.encode(), self.serde.encode(topic_name, emitted))
            self.stats.emitted += 1

    def _produce_snapshot(self, state: AgentState, partition: int) -> None:
        snapshot = AgentStateSnapshot(
            agent_id=state.agent_id,
            tenant_id=state.tenant_id,
            version=state.version,
            last_event_id=state.last_event_id,
            state_json=state.to_json(),
            updated_at=state.updated_at or datetime.now(UTC),
        )
        value = self.serde.encode(self._state_topic, snapshot)
        # The partition of the input, not the partitioner's choice: restore reads exactly the
        # changelog partitions matching the assigned input partitions.
        self._produce(self._state_topic, state.agent_id.encode(), value, partition=partition)

    def _dead_letter(
        self, msg: Message, error_class: str, reason: str, event: Event | None = None
    ) -> None:
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        headers = message_headers(msg)
        letter = DeadLetter(
            dead_letter_id=dlq.dead_letter_id(topic, partition, offset),
            original_topic=topic,
            original_partition=partition,
            original_offset=offset,
            original_key=msg.key(),
            original_value=msg.value(),
            original_headers=[RecordHeader(key=k, value=v) for k, v in headers],
            reason=reason[:2000],
            error_class=error_class,
            agent_id=event.envelope.agent_id if event else None,
            event_id=event.envelope.event_id if event else None,
            failed_at=datetime.now(UTC),
            source="processor",
        )
        log.warning(
            "dead_letter",
            topic=topic,
            partition=partition,
            offset=offset,
            error_class=error_class,
            reason=reason,
        )
        self._produce(
            self._dlq_topic,
            msg.key(),
            self.serde.encode(self._dlq_topic, letter),
            headers=dlq.headers_for(letter),
        )
        self.stats.dead_lettered += 1

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers | None = None,
        partition: int = -1,
    ) -> None:
        wire_headers: list[tuple[str, str | bytes | None]] = list(headers or [])
        while True:
            try:
                self._producer.produce(
                    topic,
                    value,
                    key,
                    partition=partition,
                    headers=wire_headers,
                    on_delivery=self._on_delivery,
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
