"""Processor throughput: one engine (in this process) working off a pre-filled input backlog.

The rate counts from the first applied batch to the last, so the consumer group's join (about
3 s on the embedded broker) is reported apart, not averaged in.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from agentstream.processors.engine.loop import ProcessorEngine
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.tools.harness.bench_workload import SPEC, BenchmarkError, Progress


@dataclass
class ProcessorFigures:
    transitions: int
    seconds: float
    startup_seconds: float
    emitted: int
    batches: int

    @property
    def rate(self) -> float:
        return self.transitions / self.seconds


def measure(
    settings: Settings,
    backlog: int,
    *,
    batch_size: int | None = None,
    timeout: float = 300.0,
    on_progress: Progress | None = None,
) -> ProcessorFigures:
    """Run one engine over ``settings``' input topics until it applied ``backlog`` events."""
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    engine = ProcessorEngine(
        settings,
        SPEC,
        serde=serde,
        group_id=f"bench-processor-{uuid.uuid4().hex[:6]}",
        # Small backlogs get smaller batches, so that the rate spans several of them.
        batch_size=batch_size or max(100, min(1000, backlog // 10)),
    )
    began = time.perf_counter()
    deadline = began + timeout
    marks: dict[str, float] = {}
    seen = [0]

    def until() -> bool:
        applied = engine.stats.applied
        now = time.perf_counter()
        if applied and "first" not in marks:
            marks["first"], marks["first_applied"] = now, applied
        if on_progress is not None and applied > seen[0]:
            on_progress(applied - seen[0])
            seen[0] = applied
        if applied >= backlog:
            marks["last"] = now
            return True
        return now > deadline

    stats = engine.run(until=until)
    if "last" not in marks:
        raise BenchmarkError(
            f"the processor applied {stats.applied} of {backlog} in {timeout:.0f} s"
        )
    if marks["first_applied"] >= backlog:  # one batch took it all: count the join in
        marks["first"], marks["first_applied"] = began, 0
    counted = stats.applied - int(marks["first_applied"])
    return ProcessorFigures(
        transitions=counted,
        seconds=max(marks["last"] - marks["first"], 1e-9),
        startup_seconds=marks["first"] - began,
        emitted=stats.emitted,
        batches=stats.batches,
    )
