"""Test harness around the real broker: scripted workers, outcome collection, service processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from world import respond

from agentstream.schemas.events import (
    AgentStateSnapshot,
    ChangelogMarker,
    Event,
    RunCompleted,
    RunFailed,
)
from agentstream.streams.consumer import group_config
from agentstream.streams.log_end import log_ends
from agentstream.streams.log_end import read_to_end as read_to_end_of_log
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topics import (
    APPROVAL_REQUESTS,
    MODEL_CALLS,
    TOOL_CALLS,
    TopicSpec,
    topic_for,
)

SUPPORT_DIR = Path(__file__).resolve().parent


def serde_for(settings: Settings) -> EventSerde:
    return EventSerde(registry_client(settings.require_schema_registry_url()))


class FakeWorkers:
    """Answers model calls, tool calls and approval requests with the scripted world, on the
    real broker, in a background thread (at-least-once, like the real workers)."""

    def __init__(
        self, settings: Settings, respond: Callable[[Event], Event | None] = respond
    ) -> None:
        self.settings = settings
        self.respond = respond
        self.serde = serde_for(settings)
        self.answered = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-workers")

    def _run(self) -> None:
        topics = [self.settings.topic(t.name) for t in (MODEL_CALLS, TOOL_CALLS, APPROVAL_REQUESTS)]
        consumer = Consumer(group_config(self.settings, f"fake-{uuid.uuid4()}"))
        producer = Producer(
            {
                **self.settings.kafka_config(),
                "linger.ms": 5,
                "acks": "all",
                "partitioner": "murmur2_random",
            }
        )
        consumer.subscribe(topics)
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(500, 0.2):
                    if msg.error() is not None:
                        continue
                    request = self.serde.decode(msg.topic() or "", msg.value())
                    assert isinstance(request, Event)
                    reply = self.respond(request)
                    if reply is None:
                        continue
                    topic = self.settings.topic(topic_for(type(reply)).name)
                    producer.produce(
                        topic, self.serde.encode(topic, reply), reply.envelope.agent_id.encode()
                    )
                    self.answered += 1
                producer.flush(30)
        except BaseException as exc:  # surfaced by stop()
            self._error = exc
        finally:
            consumer.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(30)
        if self._error is not None and exc is None:
            raise self._error


@dataclass(frozen=True)
class Stamped:
    """A record with its Kafka timestamp, as confluent-kafka gives it: (type, millis)."""

    record: object
    timestamp: tuple[int, int]


class TopicCollector:
    """Reads topics from the beginning in a background thread, decoding every record (and
    keeping its timestamp, which the processor's clock check compares occurred_at with)."""

    def __init__(self, settings: Settings, specs: list[TopicSpec]) -> None:
        self.settings = settings
        self.serde = serde_for(settings)
        self.topics = [settings.topic(s.name) for s in specs]
        self.records: list[object] = []
        self.stamped: list[Stamped] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="collector")

    def _run(self) -> None:
        consumer = Consumer(group_config(self.settings, f"c-{uuid.uuid4()}"))
        consumer.subscribe(self.topics)
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(1000, 0.2):
                    if msg.error() is None:
                        record = self.serde.decode(msg.topic() or "", msg.value())
                        with self._lock:
                            self.records.append(record)
                            self.stamped.append(Stamped(record, msg.timestamp()))
        finally:
            consumer.close()

    def snapshot(self) -> list[object]:
        with self._lock:
            return list(self.records)

    def of_kind(self, kind: type[object], **fields: object) -> list[Stamped]:
        """The records of ``kind`` whose ``fields`` have these values, with their timestamps."""
        with self._lock:
            stamped = list(self.stamped)
        return [
            s
            for s in stamped
            if isinstance(s.record, kind)
            and all(getattr(s.record, k) == v for k, v in fields.items())
        ]

    def wait_for_kind(self, kind: type[object], timeout: float = 60, **fields: object) -> Stamped:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of_kind(kind, **fields)
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no {kind.__name__} with {fields} in {timeout}s")

    def wait_for(self, done: Callable[[list[object]], bool], timeout: float) -> list[object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            records = self.snapshot()
            if done(records):
                return records
            time.sleep(0.2)
        return self.snapshot()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(30)


def read_to_end(settings: Settings, specs: list[TopicSpec]) -> list[tuple[int, object]]:
    """Every record of the topics up to the end of their logs, as (partition, record)."""
    serde = serde_for(settings)
    consumer = Consumer(
        {
            **settings.kafka_config(),
            "group.id": f"r-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        places = [
            (settings.topic(spec.name), partition)
            for spec in specs
            for partition in metadata.topics[settings.topic(spec.name)].partitions
        ]
        ends = log_ends(consumer, places, timeout=10)
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        deadline = time.monotonic() + 60
        return [
            (msg.partition() or 0, serde.decode(msg.topic() or "", msg.value()))
            for records in read_to_end_of_log(
                consumer, ends, batch=5000, poll=0.5, deadline=deadline
            )
            for msg in records
        ]
    finally:
        consumer.close()


def outcomes_by_agent(records: list[object]) -> dict[str, dict[str, Event]]:
    """agent_id -> {outcome event_id -> outcome}; re-emissions share an event_id."""
    found: dict[str, dict[str, Event]] = defaultdict(dict)
    for record in records:
        assert isinstance(record, RunCompleted | RunFailed)
        found[record.envelope.agent_id][record.envelope.event_id] = record
    return found


def latest_snapshots(records: list[tuple[int, object]]) -> dict[str, AgentStateSnapshot]:
    latest: dict[str, AgentStateSnapshot] = {}
    for _, record in records:
        if isinstance(record, ChangelogMarker):
            continue
        assert isinstance(record, AgentStateSnapshot)
        current = latest.get(record.agent_id)
        if current is None or record.version >= current.version:
            latest[record.agent_id] = record
    return latest


def cli_env(settings: Settings, home: Path) -> dict[str, str]:
    """The environment of an ``agentstream`` command run as a user would, on ``settings``'
    cluster and topics, with its own AGENTSTREAM_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env.update(
        {
            "AGENTSTREAM_BOOTSTRAP_SERVERS": settings.require_bootstrap_servers(),
            "AGENTSTREAM_SCHEMA_REGISTRY_URL": settings.require_schema_registry_url(),
            "AGENTSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "AGENTSTREAM_GROUP_SESSION_TIMEOUT_MS": str(settings.group_session_timeout_ms),
            "AGENTSTREAM_HOME": str(home),
        }
    )
    return env


class ServiceProcess:
    """An ``agentstream`` service as a child process, stopped (or killed) by the test."""

    def __init__(self, args: list[str], settings: Settings, log_dir: Path, name: str) -> None:
        self.args = args
        self.settings = settings
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_offset = 0
        self.extra_env: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
        s = self.settings
        env.update(
            {
                "AGENTSTREAM_BOOTSTRAP_SERVERS": s.require_bootstrap_servers(),
                "AGENTSTREAM_SCHEMA_REGISTRY_URL": s.require_schema_registry_url(),
                "AGENTSTREAM_TOPIC_PREFIX": s.topic_prefix,
                "AGENTSTREAM_PARTITIONS": str(s.partitions),
                "AGENTSTREAM_GROUP_SESSION_TIMEOUT_MS": str(s.group_session_timeout_ms),
                "AGENTSTREAM_LOG_FORMAT": "json",
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(SUPPORT_DIR), os.environ.get("PYTHONPATH")])
                ),
            }
        )
        if s.database_url:
            env["AGENTSTREAM_DATABASE_URL"] = s.database_url
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        exe = shutil.which("agentstream", path=str(Path(sys.executable).parent))
        assert exe, "agentstream is not installed next to this Python"
        self.starts += 1
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self.proc = subprocess.Popen(
                [exe, *self.args],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def wait_for_log(self, marker: str, timeout: float = 60) -> None:
        """Wait until the current incarnation logged ``marker``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                if marker.encode() in log.read():
                    return
            time.sleep(0.1)
        raise AssertionError(
            f"{self.log_path.name}: no {marker!r} in {timeout}s\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.terminate()
        self.kill()
