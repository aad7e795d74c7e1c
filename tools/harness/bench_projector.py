"""Projector and rebuild throughput: complete agent histories on fresh topics, one projector (in
this process, its writer thread included) from empty tables until caught up, then a rebuild of
every read model from the same topics.

The projector's rate counts from its first committed batch to the last (the group join is
reported apart); the rebuild's rate is end to end, migrations and checksums included.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from agentstream.projections.database import connect
from agentstream.projections.migrate import migrate
from agentstream.projections.projector import Projector, tune_for_batches
from agentstream.projections.queries import projection_position
from agentstream.projections.rebuild import rebuild
from agentstream.streams.runtime.settings import Settings
from agentstream.tools.harness.bench_workload import BenchmarkError, Progress


@dataclass
class ProjectionFigures:
    events: int
    projector_seconds: float
    projector_startup_seconds: float
    rebuild_events: int
    rebuild_seconds: float
    rebuild_equal: bool | None

    @property
    def projector_rate(self) -> float:
        return self.events / self.projector_seconds

    @property
    def rebuild_rate(self) -> float:
        return self.rebuild_events / self.rebuild_seconds


def _follow(
    database_url: str,
    schema: str,
    total: int,
    stopped: Callable[[], bool],
    *,
    deadline: float,
    on_progress: Progress | None,
) -> tuple[tuple[float, int], float]:
    """Watch the stored offsets until ``total`` records are projected: (when the first batch
    was committed, how many it held), and when the last one was."""
    first: tuple[float, int] | None = None
    seen = 0
    with connect(database_url, schema, autocommit=True) as conn:
        while True:
            done = sum(projection_position(conn).values())
            now = time.perf_counter()
            if first is None and done:
                first = (now, done)
            if on_progress is not None and done > seen:
                on_progress(done - seen)
                seen = done
            if first is not None and done >= total:
                return first, now
            if stopped():
                raise BenchmarkError(f"the projector stopped after {done} of {total} events")
            if now > deadline:
                raise BenchmarkError(f"the projector projected {done} of {total} in time")
            time.sleep(0.05)


def measure(
    settings: Settings,
    total: int,
    *,
    batch_size: int | None = None,
    timeout: float = 900.0,
    on_projected: Progress | None = None,
    on_rebuilt: Progress | None = None,
) -> ProjectionFigures:
    """``settings`` names topics already holding ``total`` records of complete histories."""
    # Small runs get smaller batches, so that the rate spans several of them.
    batch_size = batch_size or max(200, min(5000, total // 10))
    database_url = settings.require_database_url()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    migrate(database_url, schema)
    # As `projections run` and `projections rebuild` tune their processes; without it the
    # writer thread waits up to 5 ms for the interpreter after each round trip to PostgreSQL.
    switch_interval = sys.getswitchinterval()
    tune_for_batches()
    projector = Projector(
        settings,
        schema=schema,
        group_id=f"bench-projector-{uuid.uuid4().hex[:6]}",
        batch_size=batch_size,
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            projector.run()
        except BaseException as exc:  # reported by the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="bench-projector")
    rebuilt_seen = [0]

    def progress(done: int, _total: int) -> None:
        if on_rebuilt is not None and done > rebuilt_seen[0]:
            on_rebuilt(done - rebuilt_seen[0])
            rebuilt_seen[0] = done

    began = time.perf_counter()
    try:
        thread.start()
        try:
            first, finished = _follow(
                database_url,
                schema,
                total,
                lambda: bool(failure) or not thread.is_alive(),
                deadline=began + timeout,
                on_progress=on_projected,
            )
        finally:
            projector.stop()
            thread.join()
        report = rebuild(
            settings, schema=schema, swap=False, batch_size=batch_size, on_progress=progress
        )
    finally:
        sys.setswitchinterval(switch_interval)
        with psycopg.connect(database_url, autocommit=True) as conn:
            for name in (schema, f"{schema}_rebuild"):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )
    if first[1] >= total:  # all in the first batch: only then is the group join counted in
        first = (began, 0)
    return ProjectionFigures(
        events=total - first[1],
        projector_seconds=max(finished - first[0], 1e-9),
        projector_startup_seconds=first[0] - began,
        rebuild_events=report.records,
        rebuild_seconds=report.seconds,
        rebuild_equal=report.equal,
    )
