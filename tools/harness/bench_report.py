"""The benchmark's report: figures, ratios and targets, with the versions and the machine they
were measured on, as a rich table and as JSON."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import confluent_kafka
import fastavro
from rich.table import Table

#: The targets of DESIGN.md: (figure, comparison, bound).
TARGETS: dict[str, tuple[str, float]] = {
    "processor_transitions_per_s": (">=", 30_000),
    "processor_vs_faust": (">=", 10),
    "projector_events_per_s": (">=", 40_000),
    "rebuild_events_per_s": (">=", 50_000),
    "latency_p50_ms": ("<", 50),
    "latency_p99_ms": ("<", 250),
    "dev_up_ready_s": ("<", 10),
}


@dataclass
class Report:
    quick: bool
    sizes: dict[str, int | float] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> float | None:
        return self.figures.get(name, self.ratios.get(name))

    def targets(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, (op, bound) in TARGETS.items():
            measured = self.value(name)
            if measured is None:
                continue
            met = measured >= bound if op == ">=" else measured < bound
            out[name] = {"target": f"{op} {bound:g}", "measured": measured, "met": met}
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "benchmark": "agentstream bench",
            "quick": self.quick,
            "sizes": self.sizes,
            "figures": self.figures,
            "ratios": self.ratios,
            "targets": self.targets(),
            "details": self.details,
            "versions": self.versions,
            "machine": self.machine,
        }


def versions(postgres: str | None) -> dict[str, str]:
    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "agentstream": dist("agentstream"),
        "confluent-kafka": dist("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "faust-streaming": dist("faust-streaming"),
        "fastavro": fastavro.__version__,
        "pydantic": dist("pydantic"),
        "postgres": postgres or "unknown",
    }


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count() or 0,
        "cpu_model": platform.processor() or platform.machine(),
        "memory_bytes": 0,
        "system": f"{platform.system()} {platform.release()}",
    }
    cpuinfo, meminfo = Path("/proc/cpuinfo"), Path("/proc/meminfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.partition(":")[2].strip()
                break
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_bytes"] = int(line.split()[1]) * 1024
                break
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    return info


def _rate(value: float | None, unit: str = "/s") -> str:
    return "-" if value is None else f"{value:,.0f}{unit}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x" if value >= 0.1 else f"{value:.3f}x"


def table(report: Report) -> Table:
    f, r = report.figures, report.ratios
    targets = report.targets()
    grid = Table(title="agentstream bench" + (" (--quick)" if report.quick else ""))
    for column in ("stage", "measured", "compared with", "ratio", "target"):
        grid.add_column(column, justify="right" if column != "stage" else "left")

    def verdict(name: str) -> str:
        target = targets.get(name)
        if target is None:
            return ""
        mark = "[green]met[/green]" if target["met"] else "[red]missed[/red]"
        return f"{target['target']} {mark}"

    grid.add_row(
        "processor (transitions/s, 1 process)",
        _rate(f.get("processor_transitions_per_s")),
        f"Faust + Table {_rate(f.get('faust_baseline_events_per_s'))}",
        _ratio(r.get("processor_vs_faust")),
        verdict("processor_transitions_per_s") + " / " + verdict("processor_vs_faust"),
    )
    grid.add_row(
        "  vs. its I/O + Avro floor",
        "",
        _rate(f.get("processor_floor_per_s")),
        _ratio(r.get("processor_vs_floor")),
        "",
    )
    for name, label in (
        ("kafka_consume_per_s", "raw consume (records/s)"),
        ("kafka_produce_per_s", "raw produce (records/s)"),
        ("avro_decode_per_s", "fastavro decode alone"),
        ("avro_encode_per_s", "fastavro encode alone"),
    ):
        grid.add_row(
            f"  limit: {label}",
            _rate(f.get(name)),
            "processor",
            _ratio(r.get(f"processor_vs_{name.removesuffix('_per_s')}")),
            "",
        )
    grid.add_row(
        "projector into PostgreSQL (events/s)",
        _rate(f.get("projector_events_per_s")),
        f"raw consume {_rate(f.get('kafka_consume_per_s'))}",
        _ratio(r.get("projector_vs_kafka_consume")),
        verdict("projector_events_per_s"),
    )
    grid.add_row(
        f"rebuild ({report.sizes.get('projection_events', 0):,} events)",
        _rate(f.get("rebuild_events_per_s")),
        "projector",
        _ratio(r.get("rebuild_vs_projector")),
        verdict("rebuild_events_per_s"),
    )
    offered = report.sizes.get("latency_offered_runs_per_s", 0)
    for q in ("p50", "p95", "p99"):
        grid.add_row(
            f"end-to-end 3-step run {q} at {offered:g} runs/s",
            f"{f.get(f'latency_{q}_ms', 0):.1f} ms",
            "",
            "",
            verdict(f"latency_{q}_ms"),
        )
    grid.add_row(
        f"runs ended per second at {offered:g} offered",
        _rate(f.get("latency_completed_runs_per_s")),
        "",
        "",
        "saturated" if f.get("latency_completed_runs_per_s", 0) < 0.95 * offered else "kept up",
    )
    grid.add_row(
        "dev up (stack + services) to ready",
        f"{f.get('dev_up_ready_s', 0):.1f} s",
        f"stack alone {f.get('stack_ready_s', 0):.1f} s",
        "",
        verdict("dev_up_ready_s"),
    )
    return grid
