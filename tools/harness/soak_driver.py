"""The soak run: a steady rate of questions to the support agent through every service for
minutes, sampling throughput and each service's memory, then draining and checking that every
run ended. ``agentstream soak`` prints what this returns."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentstream.processors.loading import DEFAULT_SPEC
from agentstream.schemas.events import AvroRecord, RunCompleted, RunFailed
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import OUTCOMES
from agentstream.tools.devstack.services import ServiceSupervisor
from agentstream.tools.harness.chaos_services import prepare_services
from agentstream.tools.harness.chaos_workload import (
    AutoApprover,
    TopicFollower,
    questions,
    stamped_now,
)
from agentstream.tools.harness.soak_memory import MemoryVerdict, rss_mb, verdict


@dataclass(frozen=True)
class SoakConfig:
    seconds: float = 300.0
    rate: float = 20.0  # runs started per second
    agents: int = 1000  # the pool the runs go to, round robin
    sample_every_s: float = 10.0
    drain_timeout_s: float = 120.0
    spec: str = DEFAULT_SPEC


@dataclass(frozen=True)
class Sample:
    at_s: float
    sent: int
    ended: int
    #: runs ended per second since the previous sample
    throughput: float
    rss_mb: dict[str, float | None]


@dataclass
class SoakReport:
    config: SoakConfig
    samples: list[Sample] = field(default_factory=list)
    memory: list[MemoryVerdict] = field(default_factory=list)
    sent: int = 0
    ended: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def flat(self) -> bool:
        return bool(self.memory) and all(m.flat for m in self.memory)

    @property
    def ok(self) -> bool:
        return self.flat and self.ended == self.sent and not self.problems


class OutcomeCounter(TopicFollower):
    """Counts the runs that ended (distinct outcome ids), in a background thread."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, OUTCOMES, "outcomes")
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    @property
    def ended(self) -> int:
        with self._lock:
            return len(self._seen)

    def handle(self, record: AvroRecord) -> None:
        if isinstance(record, RunCompleted | RunFailed):
            with self._lock:
                self._seen.add(record.envelope.event_id)


def run_soak(
    settings: Settings,
    workdir: Path,
    config: SoakConfig,
    *,
    schema: str,
    on_sample: Callable[[Sample], None] = lambda _: None,
) -> SoakReport:
    """Send ``rate`` runs a second for ``seconds`` to the running services, sampling as it goes;
    every process started here is stopped here."""
    report = SoakReport(config)
    services = prepare_services(config.spec, settings, schema, workdir, "soak.")
    approver = AutoApprover(settings)
    counter = OutcomeCounter(settings)
    began = time.monotonic()
    try:
        services.start(timeout=90.0)
        approver.start()
        counter.start()
        report.sent = _steady_load(
            settings,
            services=services,
            counter=counter,
            config=config,
            report=report,
            on_sample=on_sample,
        )
        deadline = time.monotonic() + config.drain_timeout_s
        while counter.ended < report.sent and time.monotonic() < deadline:
            services.check_alive()
            time.sleep(0.5)
        report.ended = counter.ended
    finally:
        counter.stop()
        try:
            approver.stop()
        finally:
            codes = services.stop()
    report.seconds = time.monotonic() - began
    for name, code in codes.items():
        if code != 0:
            report.problems.append(f"the {name} exited with {code} on SIGTERM")
    if report.ended != report.sent:
        report.problems.append(f"{report.sent - report.ended} run(s) did not end")
    for service in services.services:
        points = [(s.at_s, s.rss_mb[service.name]) for s in report.samples]
        report.memory.append(verdict(service.name, [(t, mb) for t, mb in points if mb]))
    return report


def _steady_load(
    settings: Settings,
    *,
    services: ServiceSupervisor,
    counter: OutcomeCounter,
    config: SoakConfig,
    report: SoakReport,
    on_sample: Callable[[Sample], None],
) -> int:
    """Send at the rate, a tick every 100 ms; sample every ``sample_every_s``."""
    sent = 0
    round_no = 0
    pending = questions(config.agents, 1, seed=round_no, prefix="soak")
    started = time.monotonic()
    next_sample = started
    previous = (0.0, 0)
    with AgentStreamProducer(settings) as producer:
        while (now := time.monotonic()) - started < config.seconds:
            due = int((now - started) * config.rate)
            while sent < due:
                if not pending:
                    round_no += 1
                    pending = questions(config.agents, 1, seed=round_no, prefix="soak")
                producer.send_async(stamped_now(pending.pop()))
                sent += 1
            if now >= next_sample:
                services.check_alive()
                at, ended = now - started, counter.ended
                throughput = (ended - previous[1]) / (at - previous[0]) if at > previous[0] else 0
                sample = Sample(
                    at,
                    sent,
                    ended,
                    throughput,
                    {s.name: rss_mb(s.proc.pid) if s.proc else None for s in services.services},
                )
                report.samples.append(sample)
                on_sample(sample)
                previous = (at, ended)
                next_sample += config.sample_every_s
            time.sleep(0.1)
        producer.flush()
    return sent
