"""Reading partitions to the end of their logs, for restore, scans and replays.

A partition is done at the end of its log (a partition-EOF event from a consumer configured with
``enable.partition.eof``) once its planned end offset is reached, not at that offset itself: the
embedded broker reports a high watermark that can stop short of the last records of a batch, so
the records past it are read too (on Apache Kafka, those are records appended during the read).
At the end of the log the offset is past any transaction marker as well.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from agentstream.schemas.errors import ServiceUnavailableError

__all__ = [
    "Place",
    "log_ends",
    "places_with_records",
    "read_to_end",
]

#: A partition of a topic, as (topic, partition).
Place = tuple[str, int]


def log_ends(consumer: Consumer, places: Iterable[Place], timeout: float) -> dict[Place, int]:
    """The high watermark of each non-empty partition of ``places``."""
    ends: dict[Place, int] = {}
    try:
        for topic, partition in places:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout)
            if high > low:
                ends[(topic, partition)] = int(high)
    except KafkaException as exc:
        raise ServiceUnavailableError(f"cannot read the log ends: {exc}") from exc
    return ends


def read_to_end(
    consumer: Consumer,
    ends: dict[Place, int],
    *,
    batch: int,
    poll: float,
    deadline: float | None = None,
    strict: bool = False,
) -> Iterator[list[Message]]:
    """Batches of the records of the assigned partitions in ``ends``, until each is done.

    A partition is removed from ``ends`` after the batch that finished it; the caller may
    remove one itself to stop reading it early. ``deadline`` (``time.monotonic()``) bounds
    the whole read. A consumer error other than the end of a partition raises
    ServiceUnavailableError when ``strict``, else is skipped: the client retries on its own.
    """
    while ends:
        if deadline is not None and time.monotonic() > deadline:
            raise ServiceUnavailableError(f"could not read {sorted(ends)} to the end in time")
        records: list[Message] = []
        finished: list[Place] = []
        for msg in consumer.consume(batch, poll):
            place = (msg.topic() or "", msg.partition() or 0)
            if place not in ends:
                continue
            error = msg.error()
            if error is None:
                records.append(msg)
            elif error.code() == KafkaError._PARTITION_EOF:
                if (msg.offset() or 0) >= ends[place]:
                    finished.append(place)
            elif strict:
                raise ServiceUnavailableError(f"reading {place[0]}[{place[1]}]: {error}")
        yield records
        # Only now: while the caller works through the batch, its partitions are still listed.
        for place in finished:
            ends.pop(place, None)


def places_with_records(
    consumer: Consumer, spans: dict[Place, tuple[int, int]], *, timeout: float
) -> set[Place]:
    """The partitions holding a record this consumer would be given in [start, end) of their
    span. After a transactional writer's last record comes its commit marker, and aborted
    records are never delivered: a reader that has seen every record can stand short of the
    high watermark, and only this tells it apart from one that is behind. ``consumer`` needs
    ``enable.partition.eof``; its assignment is replaced. Partitions not read through within
    ``timeout`` (an open transaction holds their end back) count as holding records."""
    reading = {place: end for place, (start, end) in spans.items() if end > start}
    found: set[Place] = set()
    if not reading:
        return found
    consumer.assign([TopicPartition(t, p, spans[(t, p)][0]) for t, p in reading])
    try:
        deadline = time.monotonic() + timeout
        for records in read_to_end(consumer, reading, batch=500, poll=0.2, deadline=deadline):
            for msg in records:
                place = (msg.topic() or "", msg.partition() or 0)
                if place in reading and (msg.offset() or 0) < spans[place][1]:
                    found.add(place)
                    reading.pop(place)
    except ServiceUnavailableError:
        found |= set(reading)
    finally:
        consumer.assign([])
    return found
