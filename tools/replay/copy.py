"""Copy a window of the agent topics to another topic prefix or another cluster, for debugging a
production history somewhere safe. Records are copied byte for byte, to the same partition,
with their keys, headers and timestamps, so the copy is co-partitioned like the original and
time-window replays of it select the same records.

Values stay in the Confluent wire format and name their schemas by id: a copy to another
cluster is decodable only with the same schema registry (or one holding the same ids).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, Message, Producer

from agentstream.schemas.errors import ConfigurationError, DeliveryError
from agentstream.streams.replay_reader import NoTracker, TopicReader, Tracker, Window
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import TopicSpec, ensure_topics


@dataclass
class CopyReport:
    destination: str
    records: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def destination_settings(
    source: Settings, *, to_prefix: str | None, to_bootstrap_servers: str | None
) -> Settings:
    """The settings naming the copy's topics; refuses a copy onto the source itself."""
    update: dict[str, object] = {}
    if to_prefix is not None:
        update["topic_prefix"] = to_prefix
    if to_bootstrap_servers is not None:
        update["bootstrap_servers"] = to_bootstrap_servers
    # validated like the environment, so a malformed --to-bootstrap-servers is one clear line
    dest = Settings.model_validate({**source.model_dump(), **update})
    if dest.topic_prefix == source.topic_prefix and set(
        dest.require_bootstrap_servers().split(",")
    ) == set(source.require_bootstrap_servers().split(",")):
        raise ConfigurationError(
            "the copy would overwrite its source",
            hint="give --to-prefix or --to-bootstrap-servers",
        )
    return dest


def copy_topics(
    source: Settings,
    dest: Settings,
    specs: Sequence[TopicSpec],
    window: Window,
    tracker: Tracker | None = None,
) -> CopyReport:
    """Copy the records of ``specs`` that ``window`` selects from ``source`` to ``dest``."""
    tracker = tracker or NoTracker()
    began = time.monotonic()
    report = CopyReport(f"{dest.bootstrap_servers} prefix {dest.topic_prefix!r}")
    names = {source.topic(spec.name): dest.topic(spec.name) for spec in specs}
    with TopicReader(source) as reader:
        counts = reader.partition_counts(list(names))
        _prepare_destination(dest, counts, names)
        spans = reader.spans(list(names), window)
        progress = tracker.start("copying", sum(s.size for s in spans))
        producer = Producer(
            {
                **dest.kafka_config(),
                # idempotence keeps each partition's order through retries
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "queue.buffering.max.messages": 200_000,
            }
        )
        failures: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(str(err))

        for msg in reader.read(spans, window, on_progress=progress):
            topic = names[msg.topic() or ""]
            kind, timestamp = msg.timestamp()
            _produce(
                producer,
                topic,
                msg,
                timestamp if kind != TIMESTAMP_NOT_AVAILABLE else None,
                on_delivery,
            )
            report.per_topic[topic] = report.per_topic.get(topic, 0) + 1
            report.records += 1
        remaining = producer.flush(60)
    if remaining or failures:
        raise DeliveryError(
            f"the copy is incomplete: {remaining} unacknowledged, {len(failures)} failed"
            + (f" ({failures[0]})" if failures else ""),
            hint="check the destination cluster and run the copy again into a fresh prefix",
        )
    report.seconds = time.monotonic() - began
    return report


def _produce(
    producer: Producer,
    topic: str,
    msg: Message,
    timestamp: int | None,
    on_delivery: Callable[[KafkaError | None, Message], None],
) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            producer.produce(
                topic,
                value=msg.value(),
                key=msg.key(),
                partition=msg.partition() or 0,
                headers=msg.headers() or [],
                on_delivery=on_delivery,
                # 0 lets the client stamp the record, for records that carried no time
                timestamp=0 if timestamp is None else timestamp,
            )
            return
        except BufferError:
            # The local queue is full: let acknowledgements drain it, for a while.
            if time.monotonic() > deadline:
                raise DeliveryError(
                    f"the producer queue to {topic} stayed full for 60 s",
                    hint="is the destination cluster up? run the copy again into a fresh prefix",
                ) from None
            producer.poll(0.1)


def _prepare_destination(dest: Settings, counts: dict[str, int], names: dict[str, str]) -> None:
    """Create missing destination topics with the source's partition count; refuse existing
    ones with fewer partitions (records keep their partition)."""
    wanted = max(counts.values())
    ensure_topics(dest.model_copy(update={"partitions": wanted}))
    with TopicReader(dest) as reader:
        found = reader.partition_counts(list(names.values()))
    short = [
        f"{names[t]} has {found[names[t]]} < {n}" for t, n in counts.items() if found[names[t]] < n
    ]
    if short:
        raise ConfigurationError(
            "destination topics have fewer partitions than the source: " + "; ".join(short),
            hint="copy to a fresh --to-prefix, or recreate those topics",
        )
