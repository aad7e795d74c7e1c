"""Reading topics as a given isolation level sees them: which records of aborted transactions
exist, and that read_committed readers are never given one."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from agentstream.streams.log_end import log_ends, read_to_end
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import (
    APPROVAL_REQUESTS,
    MODEL_CALLS,
    OUTCOMES,
    STATE,
    TOOL_CALLS,
    TopicSpec,
)

#: (topic, partition, offset)
Position = tuple[str, int, int]
#: what the processor writes inside its transactions
TRANSACTIONAL_OUTPUTS = (MODEL_CALLS, TOOL_CALLS, APPROVAL_REQUESTS, OUTCOMES, STATE)


def positions(settings: Settings, specs: tuple[TopicSpec, ...], isolation: str) -> set[Position]:
    """(topic, partition, offset) of every record a reader with ``isolation`` is given."""
    consumer = Consumer(
        {
            **settings.kafka_config(),
            "group.id": f"iso-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    found: set[Position] = set()
    try:
        metadata = consumer.list_topics(timeout=10)
        places = [
            (settings.topic(s.name), p)
            for s in specs
            for p in metadata.topics[settings.topic(s.name)].partitions
        ]
        ends = log_ends(consumer, places, timeout=10)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        deadline = time.monotonic() + 60
        for records in read_to_end(consumer, ends, batch=1000, poll=0.5, deadline=deadline):
            found |= {(m.topic() or "", m.partition() or 0, m.offset() or 0) for m in records}
    finally:
        consumer.close()
    return found


def aborted_positions(settings: Settings) -> set[Position]:
    """Records of aborted transactions: given to read_uncommitted readers only."""
    committed = positions(settings, TRANSACTIONAL_OUTPUTS, "read_committed")
    everything = positions(settings, TRANSACTIONAL_OUTPUTS, "read_uncommitted")
    assert committed <= everything
    return everything - committed
