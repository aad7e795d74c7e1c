"""The processor's changelog, read back: what a partition's agents looked like when the last
instance that held it stopped, which of their outputs may not have gone out, and where
consumption continues. The loop (``loop.py``) writes the changelog; this module only reads it.

Faust keeps recovery as a service of its own for the same reason: restore is where the
guarantees are decided, and it reads best apart from the batch that produces."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from agentstream.processors.core.state import AgentState
from agentstream.schemas.errors import ServiceUnavailableError
from agentstream.schemas.events import AgentStateSnapshot, ChangelogMarker, OutboxRecord
from agentstream.streams.consumer import reader_config
from agentstream.streams.log_end import log_ends, read_to_end
from agentstream.streams.runtime.backoff import Backoff
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde

__all__ = [
    "ChangelogPartition",
    "KeptStates",
    "PartitionStates",
    "committed_offsets",
    "read_changelog",
]

log = get_logger(__name__)

#: the agents of one partition, by agent id
PartitionStates = dict[str, AgentState]


@dataclass
class ChangelogPartition:
    """One changelog partition as read on restore."""

    states: PartitionStates = field(default_factory=dict)
    outboxes: dict[str, tuple[int, list[OutboxRecord]]] = field(default_factory=dict)
    marked_through: int = -1
    last_snapshot_offset: int = -1

    def read(self, msg: Message, serde: EventSerde) -> None:
        value, offset = msg.value(), msg.offset() or 0
        if value is None:  # a tombstone forgets the agent
            key = (msg.key() or b"").decode("utf-8", "replace")
            self.states.pop(key, None)
            self.outboxes.pop(key, None)
            return
        record = serde.decode(msg.topic() or "", value)
        if isinstance(record, ChangelogMarker):
            self.marked_through = max(self.marked_through, record.through_offset)
        elif isinstance(record, AgentStateSnapshot):
            self.states[record.agent_id] = AgentState.from_json(
                record.state_json, record.state_format
            )
            self.outboxes[record.agent_id] = (offset, record.outbox)
            self.last_snapshot_offset = max(self.last_snapshot_offset, offset)

    def undelivered(self) -> list[tuple[str, list[OutboxRecord]]]:
        """Only an agent's latest snapshot can hold an undelivered outbox: a batch starts only
        after the previous batch's outputs were acknowledged."""
        return [
            (agent, outbox)
            for agent, (offset, outbox) in self.outboxes.items()
            if offset > self.marked_through and outbox
        ]


def read_changelog(
    settings: Settings, serde: EventSerde, topic: str, partitions: set[int]
) -> dict[int, ChangelogPartition]:
    """Read the changelog partitions from the beginning to their current end."""
    found: dict[int, ChangelogPartition] = {p: ChangelogPartition() for p in partitions}
    reader = Consumer(reader_config(settings, "restore"))
    try:
        ends = log_ends(reader, [(topic, p) for p in partitions], timeout=10)
        reader.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        for records in read_to_end(reader, ends, batch=10_000, poll=1.0):
            for msg in records:
                found[msg.partition() or 0].read(msg, serde)
    finally:
        reader.close()
    return found


def committed_offsets(reader: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """Where each partition continues: its committed offset, asked for without
    ``require_stable`` by a read_uncommitted ``reader`` of the group. A read_committed consumer
    left to fetch them itself asks for stable offsets, and Apache Kafka 4 was seen to leave that
    request unanswered for good after a broker restart, with a crashed instance's transactional
    offsets pending. An unstable answer is safe here: at worst it is older, and re-consumed events
    are no-ops. (Not the AdminClient: its offset listing tripped an assertion in librdkafka 2.x
    while the broker restarted, aborting the process.)"""
    wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
    backoff = Backoff(initial=1.0, maximum=5.0)
    for attempt in range(1, 7):
        try:
            found = reader.committed(wanted, timeout=10)
            break
        except KafkaException as exc:  # the coordinator moves or restarts: ask again
            if attempt == 6:
                raise
            log.warning("committed_offsets_retry", attempt=attempt, error=str(exc))
            time.sleep(backoff.next_delay())
    # Never committed: from the beginning, as auto.offset.reset says.
    return [
        TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
        for tp in found
    ]


class KeptStates:
    """States of partitions revoked from this instance, with their changelog's end at that
    moment: an eager rebalance revokes every partition and most come straight back, and those
    need no restore if nobody wrote their changelog in between."""

    def __init__(self) -> None:
        self._kept: dict[int, tuple[int, PartitionStates]] = {}

    def keep(self, partition: int, changelog_end: int, states: PartitionStates) -> None:
        self._kept[partition] = (changelog_end, states)

    def clear(self) -> None:
        self._kept.clear()

    def take_back(
        self, partitions: set[int], changelog_ends: Callable[[set[int]], dict[int, int]]
    ) -> dict[int, PartitionStates]:
        """The states of ``partitions`` that are still current; everything else kept is
        dropped (those partitions went elsewhere and their states go stale from now on)."""
        kept = {p: self._kept.pop(p) for p in partitions if p in self._kept}
        self._kept.clear()
        if not kept:
            return {}
        try:
            ends = changelog_ends(set(kept))
        except ServiceUnavailableError:
            return {}
        current = {p: states for p, (end, states) in kept.items() if ends.get(p) == end}
        if current:
            log.info("partitions_kept", partitions=sorted(current))
        return current
