"""Read bounded slices of topics for the replay and inspect commands.

A slice is, per partition, an offset range ending at the high watermark seen when it was
planned, optionally cut by a window of record timestamps. Nothing joins a consumer group or
commits: operators' reads never disturb the services. The embedded broker answers
``offsets_for_times`` with offset 0, so a time window is always also checked record by record
(on Apache Kafka the lookup merely saves reading the head of the log).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message
from confluent_kafka import TopicPartition as KafkaPartition

from agentstream.schemas.errors import ConfigurationError, ServiceUnavailableError
from agentstream.streams.consumer import reader_config
from agentstream.streams.log_end import read_to_end
from agentstream.streams.runtime.settings import Settings

__all__ = [
    "NoTracker",
    "OnProgress",
    "Span",
    "TopicReader",
    "Tracker",
    "Window",
    "murmur2",
    "partition_of",
    "to_millis",
]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (the Java client's default partitioner), as an unsigned 32-bit int."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = data[whole:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_of(key: str, partitions: int) -> int:
    """The partition every agentstream producer writes ``key`` to (murmur2, like Java)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def to_millis(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Window:
    """Which records to take: record timestamps in [since, until] and offsets in [start, end)."""

    since_ms: int | None = None
    until_ms: int | None = None
    #: first offset per partition; ``starts`` names single partitions, ``start`` the rest
    start: int | None = None
    starts: Mapping[tuple[str, int], int] = field(default_factory=dict)
    end: int | None = None

    def admits(self, timestamp_ms: int) -> bool:
        if self.since_ms is not None and timestamp_ms < self.since_ms:
            return False
        return self.until_ms is None or timestamp_ms <= self.until_ms

    @property
    def bounded(self) -> bool:
        """Whether it selects less than everything."""
        return any(
            v is not None for v in (self.since_ms, self.until_ms, self.start, self.end)
        ) or bool(self.starts)


@dataclass(frozen=True)
class Span:
    """Offsets [start, end) of one partition."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


#: records examined so far (in or out of the time window)
OnProgress = Callable[[int], None]


class Tracker(Protocol):
    """Shows progress: ``start`` opens a phase of ``total`` units (None: unknown) and returns
    the callback that reports how many are done."""

    def start(self, description: str, total: int | None) -> OnProgress: ...


class NoTracker:
    def start(self, description: str, total: int | None) -> OnProgress:
        return lambda _done: None


class TopicReader:
    """Plans spans over topics and reads them to their planned end, by assignment."""

    def __init__(self, settings: Settings, *, timeout: float = 15.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self._consumer = Consumer(reader_config(settings, "replay", fetch_wait_ms=20))

    def existing(self, topics: Sequence[str]) -> dict[str, int]:
        """The partition count of each of ``topics`` that exists."""
        try:
            metadata = self._consumer.list_topics(timeout=self.timeout)
        except KafkaException as exc:
            raise ServiceUnavailableError(
                f"cannot reach the Kafka cluster at {self.settings.bootstrap_servers}: {exc}",
                hint="check AGENTSTREAM_BOOTSTRAP_SERVERS, or start `agentstream dev up`",
            ) from exc
        counts = {}
        for topic in topics:
            found = metadata.topics.get(topic)
            if found is not None and found.error is None:
                counts[topic] = len(found.partitions)
        return counts

    def partition_counts(self, topics: Sequence[str]) -> dict[str, int]:
        """Partitions of each topic; ConfigurationError naming a missing one."""
        counts = self.existing(topics)
        for topic in topics:
            if topic not in counts:
                raise ConfigurationError(
                    f"topic {topic} does not exist on {self.settings.bootstrap_servers}",
                    hint="check AGENTSTREAM_TOPIC_PREFIX, or run `agentstream topics ensure`",
                )
        return {topic: counts[topic] for topic in topics}

    def spans(
        self,
        topics: Sequence[str],
        window: Window | None = None,
        *,
        partitions: Collection[int] | None = None,
    ) -> list[Span]:
        """The offset range to read of every partition of ``topics`` (or only ``partitions``)."""
        window = window or Window()
        planned = []
        for topic, count in self.partition_counts(topics).items():
            for partition in range(count):
                if partitions is not None and partition not in partitions:
                    continue
                low, high = self._watermarks(topic, partition)
                start = window.starts.get((topic, partition), window.start)
                start = low if start is None else max(low, start)
                end = high if window.end is None else min(high, window.end)
                if window.since_ms is not None:
                    start = max(start, self._offset_at(topic, partition, window.since_ms, high))
                planned.append(Span(topic, partition, start, max(start, end)))
        return planned

    def _watermarks(self, topic: str, partition: int) -> tuple[int, int]:
        try:
            low, high = self._consumer.get_watermark_offsets(
                KafkaPartition(topic, partition), timeout=self.timeout
            )
        except KafkaException as exc:
            raise ServiceUnavailableError(f"cannot read {topic}[{partition}]: {exc}") from exc
        return int(low), int(high)

    def _offset_at(self, topic: str, partition: int, since_ms: int, high: int) -> int:
        """The first offset at or after ``since_ms``; 0 (read everything) when unknown."""
        try:
            [found] = self._consumer.offsets_for_times(
                [KafkaPartition(topic, partition, since_ms)], timeout=self.timeout
            )
        except KafkaException:
            return 0
        if found.error is not None:
            return 0
        return high if found.offset < 0 else int(found.offset)

    def read(
        self,
        spans: Sequence[Span],
        window: Window | None = None,
        on_progress: OnProgress | None = None,
    ) -> Iterator[Message]:
        """Every record of the spans, in offset order per partition, whose timestamp the window
        admits. Progress counts every record examined.

        A partition ends at the end of its log past its planned end (``streams.log_end``), or at
        the window's end offset."""
        window = window or Window()
        todo = {(s.topic, s.partition): s.end for s in spans if s.size > 0}
        if not todo:
            return
        self._consumer.assign(
            [
                KafkaPartition(s.topic, s.partition, s.start or OFFSET_BEGINNING)
                for s in spans
                if s.size > 0
            ]
        )
        examined = 0
        try:
            for records in read_to_end(self._consumer, todo, batch=2000, poll=0.5, strict=True):
                for msg in records:
                    place, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
                    if place not in todo:  # finished earlier in this batch
                        continue
                    if window.end is not None and offset >= window.end:
                        del todo[place]
                        continue
                    examined += 1
                    if window.admits(msg.timestamp()[1]):
                        yield msg
                if on_progress is not None:
                    on_progress(examined)
        finally:
            self._consumer.assign([])

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
