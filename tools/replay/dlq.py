"""Redrive dead letters: put a dead letter's original record (key, value, headers) back on its
original topic and partition, once the fault that dead-lettered it is fixed.

Idempotent without any state of its own: every redriven record carries the dead letter's id in
a header, and before sending, the destination partitions are searched for those headers. A
letter is therefore redriven at most once, whoever redrives it and with whatever filters; if the
redriven record fails again, the new dead letter has a new id and can be redriven in turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from agentstream.schemas.events import DeadLetter
from agentstream.streams.producer import AgentStreamProducer, Delivery, Headers, message_headers
from agentstream.streams.replay_reader import (
    NoTracker,
    Span,
    TopicReader,
    Tracker,
    Window,
    to_millis,
)
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import DecodeError, EventSerde
from agentstream.streams.topics import DLQ

#: The header naming the dead letter a redriven record came from.
REDRIVEN_FROM = "agentstream.redrive.dead_letter_id"


@dataclass(frozen=True)
class Letter:
    letter: DeadLetter
    partition: int
    offset: int


@dataclass(frozen=True)
class LetterFilter:
    """Which letters to redrive; every given criterion must hold."""

    reason: str | None = None  # the error class, or a substring of the reason
    topic: str | None = None  # the original topic, logical (agent.inputs) or physical
    source: str | None = None  # the service that dead-lettered it
    agent: str | None = None
    since: datetime | None = None  # failed at or after
    until: datetime | None = None

    def admits(self, letter: DeadLetter, settings: Settings) -> bool:
        if self.reason is not None and not (
            letter.error_class == self.reason or self.reason in letter.reason
        ):
            return False
        if self.topic is not None and letter.original_topic not in (
            self.topic,
            settings.topic(self.topic),
        ):
            return False
        if self.source is not None and letter.source != self.source:
            return False
        if self.agent is not None and letter.agent_id != self.agent:
            return False
        if self.since is not None and letter.failed_at < self.since:
            return False
        return self.until is None or letter.failed_at <= self.until


@dataclass
class RedrivePlan:
    todo: list[Letter] = field(default_factory=list)
    #: matched the filter, but a record redriven from them is already on the topic
    already: list[Letter] = field(default_factory=list)
    #: did not match the filter
    skipped: int = 0
    undecodable: int = 0
    #: original topics that no longer exist (their letters cannot be redriven)
    missing_topics: set[str] = field(default_factory=set)


def plan_redrive(
    settings: Settings,
    serde: EventSerde,
    letters: LetterFilter,
    tracker: Tracker | None = None,
) -> RedrivePlan:
    """Read the DLQ, keep the letters that match, and set aside those redriven before."""
    tracker = tracker or NoTracker()
    plan = RedrivePlan()
    dlq = settings.topic(DLQ.name)
    matching: dict[str, Letter] = {}
    with TopicReader(settings) as reader:
        spans = reader.spans([dlq])
        for msg in reader.read(spans, on_progress=tracker.start(f"reading {dlq}", _size(spans))):
            try:
                letter = serde.decode(dlq, msg.value())
            except DecodeError:
                plan.undecodable += 1
                continue
            if not isinstance(letter, DeadLetter):
                plan.undecodable += 1
            elif not letters.admits(letter, settings):
                plan.skipped += 1
            else:
                # the same letter twice (a re-sent dead letter) is one letter
                where = Letter(letter, msg.partition() or 0, msg.offset() or 0)
                matching.setdefault(letter.dead_letter_id, where)
        if not matching:
            return plan
        redriven = _redriven_ids(reader, settings, list(matching.values()), plan, tracker)
    for dead_letter_id, found in matching.items():
        if found.letter.original_topic in plan.missing_topics:
            continue
        (plan.already if dead_letter_id in redriven else plan.todo).append(found)
    return plan


def _redriven_ids(
    reader: TopicReader,
    settings: Settings,
    letters: Sequence[Letter],
    plan: RedrivePlan,
    tracker: Tracker,
) -> set[str]:
    """Ids of the dead letters whose records were redriven to their topics before."""
    topics = sorted({found.letter.original_topic for found in letters})
    existing = reader.existing(topics)
    plan.missing_topics = set(topics) - set(existing)
    if not existing:
        return set()
    # A record is redriven after its letter failed, so older records cannot be redrives.
    since = to_millis(min(found.letter.failed_at for found in letters))
    window = Window(since_ms=since)
    partitions = {found.letter.original_partition for found in letters}
    spans = reader.spans(list(existing), window, partitions=partitions)
    seen: set[str] = set()
    progress = tracker.start("checking earlier redrives", _size(spans))
    for msg in reader.read(spans, window, on_progress=progress):
        for name, value in message_headers(msg):
            if name == REDRIVEN_FROM and value is not None:
                seen.add(value.decode())
    return seen


def redrive(
    settings: Settings, letters: Sequence[Letter], tracker: Tracker | None = None
) -> list[Delivery]:
    """Send each letter's original record back to its topic and partition; waits for every
    acknowledgement (DeliveryError if one fails)."""
    tracker = tracker or NoTracker()
    progress = tracker.start("redriving", len(letters))
    with AgentStreamProducer(settings) as producer:
        futures: list[Future[Delivery]] = []
        for found in letters:
            letter = found.letter
            headers: Headers = [
                (h.key, h.value) for h in letter.original_headers if h.key != REDRIVEN_FROM
            ]
            headers.append((REDRIVEN_FROM, letter.dead_letter_id.encode()))
            futures.append(
                producer.produce_raw(
                    letter.original_topic,
                    letter.original_key,
                    letter.original_value,
                    headers,
                    partition=letter.original_partition,
                )
            )
        producer.flush(30)
    deliveries = [f.result(0) for f in futures]
    progress(len(deliveries))
    return deliveries


def _size(spans: Sequence[Span]) -> int:
    return sum(s.size for s in spans)
