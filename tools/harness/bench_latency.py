"""End-to-end run latency: inputs offered at a fixed rate to the real services (processor, tool
worker, model worker, each its own process), every run 3 steps (model, tool, model) with the
scripted model and instant tools; latency is from producing the input to consuming its outcome.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from agentstream.processors.loading import DEFAULT_SPEC
from agentstream.schemas.errors import EmbeddedStackError
from agentstream.schemas.events import RunCompleted, RunFailed
from agentstream.streams.consumer import reader_config
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.streams.topics import INPUTS, OUTCOMES
from agentstream.tools.devstack.services import (
    ServiceCommand,
    ServiceSupervisor,
    service_environment,
)
from agentstream.tools.harness.bench_workload import (
    BenchmarkError,
    Progress,
    order_question,
    producer,
)


@dataclass
class LatencyFigures:
    offered_per_s: float
    achieved_per_s: float
    #: runs ended per second, from the first input sent to the last outcome consumed: below the
    #: offered rate, the services were saturated and the latencies are queueing
    completed_per_s: float
    runs: int
    completed: int
    failed: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    samples_ms: list[float] = field(default_factory=list, repr=False)


def services(tag: str, spec: str = DEFAULT_SPEC) -> list[ServiceCommand]:
    """The services a run passes through, in groups of their own."""
    return [
        ServiceCommand(
            "processor",
            ("processor", "run", "--spec", spec, "--group", f"{tag}-processor"),
            "processor_started",
        ),
        ServiceCommand(
            "tool-worker",
            (
                "worker",
                "tools",
                "run",
                "--spec",
                spec,
                "--group",
                f"{tag}-tools",
                "--concurrency",
                "64",
            ),
            "worker_started",
        ),
        ServiceCommand(
            "model-worker",
            (
                "worker",
                "models",
                "run",
                "--spec",
                spec,
                "--group",
                f"{tag}-models",
                "--concurrency",
                "64",
            ),
            "worker_started",
        ),
    ]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class _Outcomes:
    """Reads the outcomes topic of a fresh stage from its start, timing each run by its correlation
    id. From the start, not from the watermarks: Apache Kafka answers a watermark query with
    NOT_LEADER_FOR_PARTITION for a moment after the topic is created (seen in bench there)."""

    def __init__(self, settings: Settings, serde: EventSerde) -> None:
        self.topic = settings.topic(OUTCOMES.name)
        self.serde = serde
        self.sent: dict[str, float] = {}
        self.latencies: dict[str, float] = {}
        self.last_ended = 0.0
        self.failed = 0
        self._stop = threading.Event()
        self._consumer = Consumer(
            reader_config(settings, "bench-outcomes", eof=False, fetch_wait_ms=5)
        )
        self._consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(settings.partitions)]
        )
        self._thread = threading.Thread(target=self._run, name="bench-outcomes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # What is fetched already, else a wait for the first record only: a batch call
            # waits out its whole timeout unless the batch fills, which would count as latency.
            messages = self._consumer.consume(1000, 0) or self._consumer.consume(1, 0.05)
            for msg in messages:
                if msg.error() is not None:
                    continue
                now = time.perf_counter()
                outcome = self.serde.decode(self.topic, msg.value())
                if not isinstance(outcome, RunCompleted | RunFailed):
                    continue
                key = outcome.envelope.correlation_id
                began = self.sent.get(key)
                if began is not None and key not in self.latencies:
                    self.latencies[key] = now - began
                    self.last_ended = max(self.last_ended, now)
                    if isinstance(outcome, RunFailed):
                        self.failed += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def _offer(
    settings: Settings,
    serde: EventSerde,
    outcomes: _Outcomes,
    sender: Producer,
    *,
    count: int,
    rate: float,
    tag: str,
    on_progress: Progress | None = None,
) -> float:
    """Produce ``count`` inputs at ``rate`` per second (one new agent each); the seconds taken."""
    topic = settings.topic(INPUTS.name)
    rng = random.Random(5)
    began = time.perf_counter()
    for i in range(count):
        due = began + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        event = order_question(f"{tag}-{i:06d}", rng, datetime.now(UTC), i)
        value = serde.encode(topic, event)
        outcomes.sent[event.envelope.correlation_id] = time.perf_counter()
        sender.produce(topic, value, event.envelope.agent_id.encode())
        sender.poll(0)
        if on_progress is not None:
            on_progress(1)
    seconds = time.perf_counter() - began
    if sender.flush(30):
        raise BenchmarkError("the latency inputs were not acknowledged")
    return seconds


def _await(outcomes: _Outcomes, keys: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(k in outcomes.latencies for k in keys):
            return
        time.sleep(0.05)


def measure(
    settings: Settings,
    *,
    workdir: Path,
    rate: float,
    seconds: float,
    on_progress: Progress | None = None,
    startup_timeout: float = 60.0,
) -> LatencyFigures:
    """Start the services on ``settings``' topics, warm them up, then offer ``rate`` runs/s for
    ``seconds``; every run must end within 60 s of the last input."""
    tag = f"bench-lat-{uuid.uuid4().hex[:6]}"
    env = service_environment(settings)
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    supervisor = ServiceSupervisor(services(tag), workdir, env)
    outcomes = _Outcomes(settings, serde)
    # One producer for the warm-up and the measured runs: a new one holds its first records
    # until it has connected (measured: the first inputs waited up to half a second).
    sender = producer(settings, **{"linger.ms": 1})
    try:
        try:
            supervisor.start(timeout=startup_timeout)
        except EmbeddedStackError:
            # Seen on the embedded broker under load: a Faust worker's first group join never
            # completes. One more start, with groups of their own, joined when it was seen here.
            supervisor.stop()
            supervisor = ServiceSupervisor(services(f"{tag}-again"), workdir, env)
            supervisor.start(timeout=startup_timeout)
        # Until every group has joined, the first runs wait for it: warm up apart.
        warm = _offer(settings, serde, outcomes, sender, count=20, rate=20.0, tag=f"{tag}-warm")
        _await(outcomes, list(outcomes.sent), startup_timeout)
        if len(outcomes.latencies) < len(outcomes.sent):
            supervisor.check()
            raise BenchmarkError(
                f"only {len(outcomes.latencies)} of {len(outcomes.sent)} warm-up runs ended "
                f"in {startup_timeout:.0f} s (after {warm:.1f} s of offering)"
            )
        outcomes.sent.clear()
        outcomes.latencies.clear()
        outcomes.failed = 0
        count = max(1, int(rate * seconds))
        offered = _offer(
            settings,
            serde,
            outcomes,
            sender,
            count=count,
            rate=rate,
            tag=tag,
            on_progress=on_progress,
        )
        keys = list(outcomes.sent)
        first_sent = min(outcomes.sent.values())
        _await(outcomes, keys, 60.0)
    finally:
        outcomes.close()
        supervisor.stop()
    samples = [outcomes.latencies[k] * 1000 for k in keys if k in outcomes.latencies]
    if len(samples) < len(keys):
        raise BenchmarkError(f"{len(keys) - len(samples)} of {len(keys)} runs did not end in time")
    return LatencyFigures(
        offered_per_s=rate,
        achieved_per_s=count / offered,
        completed_per_s=len(samples) / max(outcomes.last_ended - first_sent, 1e-9),
        runs=len(keys),
        completed=len(samples) - outcomes.failed,
        failed=outcomes.failed,
        p50_ms=percentile(samples, 0.50),
        p95_ms=percentile(samples, 0.95),
        p99_ms=percentile(samples, 0.99),
        max_ms=max(samples),
        samples_ms=samples,
    )
