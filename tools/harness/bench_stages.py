"""The stages of ``agentstream bench``, run one after the other on one stack: latency through the
services first (while the machine is otherwise idle), then the raw limits, the processor and the
Faust baseline on one input backlog, then the projector and the rebuild."""

from __future__ import annotations

import gc
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from rich.progress import Progress

from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde, registry_client
from agentstream.tools.harness import (
    bench_faust,
    bench_latency,
    bench_processor,
    bench_projector,
    bench_raw,
    bench_report,
    bench_workload,
)
from agentstream.tools.harness.bench_report import Report


@contextmanager
def _stage(progress: Progress, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    task = progress.add_task(label, total=total)
    try:
        yield lambda n: progress.advance(task, n)
    finally:
        progress.update(task, completed=total or 1, total=total or 1)
        # The bench process collects rarely, as the services do; the Kafka clients of a finished
        # stage sit in reference cycles and would otherwise outlive the broker, complaining.
        gc.collect()


def measure_all(report: Report, settings: Settings, progress: Progress) -> None:
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    with psycopg.connect(settings.require_database_url()) as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
    report.versions = bench_report.versions(str(row[0]) if row else None)
    report.machine = bench_report.machine()
    latency(report, settings, progress)
    processor(report, settings, serde, progress)
    projection(report, settings, serde, progress)


def latency(report: Report, settings: Settings, progress: Progress) -> None:
    sizes, figures = report.sizes, report.figures
    workdir = Path(tempfile.mkdtemp(prefix="agentstream-bench-"))
    try:
        latency_settings = bench_workload.fresh(settings, "lat")
        runs = int(float(sizes["latency_offered_runs_per_s"]) * float(sizes["latency_seconds"]))
        with _stage(progress, "end-to-end latency (3 services)", runs) as advance:
            lat = bench_latency.measure(
                latency_settings,
                workdir=workdir,
                rate=float(sizes["latency_offered_runs_per_s"]),
                seconds=float(sizes["latency_seconds"]),
                on_progress=advance,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    figures.update(
        latency_p50_ms=lat.p50_ms,
        latency_p95_ms=lat.p95_ms,
        latency_p99_ms=lat.p99_ms,
        latency_max_ms=lat.max_ms,
        latency_achieved_runs_per_s=lat.achieved_per_s,
        latency_completed_runs_per_s=lat.completed_per_s,
    )
    report.details["latency_runs"] = {
        "runs": lat.runs,
        "completed": lat.completed,
        "failed": lat.failed,
    }


def processor(report: Report, settings: Settings, serde: EventSerde, progress: Progress) -> None:
    """Raw limits, the processor and the Faust baseline, over one input backlog."""
    sizes, figures, ratios = report.sizes, report.figures, report.ratios
    count = int(sizes["processor_backlog"])
    proc_settings = bench_workload.fresh(settings, "proc")
    with _stage(progress, "processor: filling the input backlog", count) as advance:
        records = list(bench_workload.inputs(count))
        encoded = list(bench_workload.encoded(proc_settings, serde, records))
        bench_workload.produce_raw(bench_workload.producer(proc_settings), encoded, advance)
    with _stage(progress, "raw limits: produce, consume, fastavro", count) as advance:
        raw = bench_raw.measure(
            proc_settings, list(records[:5000]), [(k, v) for _, k, v in encoded], advance
        )
    del encoded
    figures.update(
        kafka_produce_per_s=raw.produce_per_s,
        kafka_consume_per_s=raw.consume_per_s,
        avro_encode_per_s=raw.encode_per_s,
        avro_decode_per_s=raw.decode_per_s,
    )
    report.details["mean_input_bytes"] = raw.mean_value_bytes
    with _stage(progress, "processor: working off the backlog", count) as advance:
        proc = bench_processor.measure(proc_settings, count, on_progress=advance)
    faust_count = min(int(sizes["faust_events"]), count)
    with _stage(progress, "Faust baseline: same transition, Table state", None):
        faust = bench_faust.measure(proc_settings, faust_count)
    figures.update(
        processor_transitions_per_s=proc.rate,
        faust_baseline_events_per_s=faust.rate,
    )
    # Per transition: one record in and decoded; its outputs plus the state snapshot out and
    # encoded. The floor is what those steps cost with no processing at all.
    out_per = proc.emitted / max(count, 1) + 1
    floor_s = (
        1 / raw.consume_per_s
        + out_per / raw.produce_per_s
        + 1 / raw.decode_per_s
        + out_per / raw.encode_per_s
    )
    figures["processor_floor_per_s"] = 1 / floor_s
    ratios.update(
        processor_vs_faust=proc.rate / faust.rate,
        processor_vs_floor=proc.rate * floor_s,
        processor_vs_kafka_consume=proc.rate / raw.consume_per_s,
        processor_vs_kafka_produce=proc.rate * out_per / raw.produce_per_s,
        processor_vs_avro_decode=proc.rate / raw.decode_per_s,
        processor_vs_avro_encode=proc.rate * out_per / raw.encode_per_s,
    )
    report.details["processor"] = {
        "startup_seconds": proc.startup_seconds,
        "batches": proc.batches,
        "records_out_per_transition": out_per,
    }
    report.details["faust"] = {"events": faust.events, "startup_seconds": faust.startup_seconds}


def projection(report: Report, settings: Settings, serde: EventSerde, progress: Progress) -> None:
    sizes, figures, ratios = report.sizes, report.figures, report.ratios
    total = int(sizes["projection_events"])
    proj_settings = bench_workload.fresh(settings, "proj")
    with _stage(progress, "projector: producing agent histories", total) as advance:
        produced = bench_workload.produce_raw(
            bench_workload.producer(proj_settings),
            bench_workload.encoded(proj_settings, serde, bench_workload.histories(total)),
            advance,
        )
    with (
        _stage(progress, "projector into PostgreSQL", produced.records) as projected,
        _stage(progress, "rebuild of every read model", produced.records) as rebuilt,
    ):
        proj = bench_projector.measure(
            proj_settings, produced.records, on_projected=projected, on_rebuilt=rebuilt
        )
    sizes["projection_events"] = produced.records
    figures.update(
        projector_events_per_s=proj.projector_rate,
        rebuild_events_per_s=proj.rebuild_rate,
    )
    ratios.update(
        projector_vs_kafka_consume=proj.projector_rate / figures["kafka_consume_per_s"],
        rebuild_vs_projector=proj.rebuild_rate / proj.projector_rate,
    )
    report.details["projector"] = {
        "startup_seconds": proj.projector_startup_seconds,
        "rebuild_equal": proj.rebuild_equal,
    }
