"""One offered load: runs started on a fixed schedule whether or not earlier ones have finished
(open loop), each run's latency from its scheduled start to its result, and the CPU seconds of
every process involved."""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

from agentstream.tools.harness.peers.base import Peer
from agentstream.tools.harness.peers.cpu import CpuMeter
from agentstream.tools.harness.peers.stand_ins import answer_of, expected_answer

#: The shortest sleep worth taking: below it the loop submits what is due in a batch instead.
_TICK_S = 0.0005


@dataclass
class Level:
    offered_per_s: float
    seconds: float
    runs: int
    completed: int
    #: runs that raised or returned something other than the expected answer
    failed: int
    #: runs still without a result when the drain deadline passed
    unfinished: int
    #: completed runs per second, from the first scheduled start to the last result
    completed_per_s: float
    #: None when that rank falls on a run without a result (failed or unfinished)
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    cpu_seconds: float
    cpu_ms_per_run: float | None
    #: how late the driver started its latest run: a loaded driver shows up here first
    submit_lag_ms: float
    first_error: str | None = None
    #: the machine's 1-minute load average when the level ended: other work on the machine
    #: shows up here, and its figures are then only indicative
    load_average: float = 0.0
    #: measured while stepping the load, not one of the fixed loads
    search: bool = False

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.unfinished == 0

    def under(self, bound_ms: float) -> bool:
        return self.p99_ms is not None and self.p99_ms < bound_ms

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_ms: list[float], q: float) -> float | None:
    """Nearest rank; a rank on an infinite entry (a run without a result) has no value."""
    if not sorted_ms:
        return None
    value = sorted_ms[max(0, math.ceil(q * len(sorted_ms)) - 1)]
    return None if math.isinf(value) else value


async def offer(
    peer: Peer,
    rate: float,
    seconds: float,
    *,
    drain_seconds: float,
    prefix: str,
    search: bool = False,
) -> Level:
    total = max(1, round(rate * seconds))
    latencies: list[float] = []
    errors: list[str] = []
    last_done = 0.0

    async def one(index: int, due: float) -> None:
        nonlocal last_done
        run_id = f"{prefix}-{index}"
        try:
            result = await peer.submit(run_id)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:500])
            return
        done = time.perf_counter()
        if answer_of(result) != expected_answer(run_id):
            errors.append(f"unexpected result for {run_id}: {result!r}"[:500])
            return
        last_done = max(last_done, done)
        # From the scheduled start, not the actual one: a driver that falls behind is part of
        # the latency its users would see (no coordinated omission).
        latencies.append((done - due) * 1000.0)

    meter = CpuMeter(peer.pids())
    meter.begin()
    tasks: set[asyncio.Task[None]] = set()
    lag = 0.0
    began = time.perf_counter()
    for index in range(total):
        due = began + index / rate
        wait = due - time.perf_counter()
        if wait > _TICK_S:
            await asyncio.sleep(wait)
        lag = max(lag, time.perf_counter() - due)
        tasks.add(asyncio.create_task(one(index, due)))
    _, pending = await asyncio.wait(tasks, timeout=drain_seconds)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    cpu = meter.end()

    completed = len(latencies)
    unfinished = len(pending)
    ranked = sorted(latencies) + [math.inf] * (len(errors) + unfinished)
    return Level(
        offered_per_s=rate,
        seconds=seconds,
        runs=total,
        completed=completed,
        failed=len(errors),
        unfinished=unfinished,
        completed_per_s=completed / (last_done - began) if completed and last_done > began else 0.0,
        p50_ms=percentile(ranked, 0.50),
        p95_ms=percentile(ranked, 0.95),
        p99_ms=percentile(ranked, 0.99),
        max_ms=percentile(ranked, 1.0),
        cpu_seconds=cpu,
        cpu_ms_per_run=cpu * 1000.0 / completed if completed else None,
        submit_lag_ms=lag * 1000.0,
        first_error=errors[0] if errors else None,
        load_average=os.getloadavg()[0],
        search=search,
    )
