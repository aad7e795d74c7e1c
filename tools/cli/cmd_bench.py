"""``agentstream bench``: every throughput and latency figure of DESIGN.md in one run, beside
the limits of the same machine, the Faust baseline, the versions and the hardware."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from agentstream.processors.loading import DEFAULT_SPEC
from agentstream.streams.runtime.settings import load_settings
from agentstream.tools.cli.options import BrokerOption, logs_off_screen
from agentstream.tools.devstack.full_stack import full_stack
from agentstream.tools.devstack.stack import BrokerKind

_ENDPOINTS = (
    "AGENTSTREAM_BOOTSTRAP_SERVERS",
    "AGENTSTREAM_SCHEMA_REGISTRY_URL",
    "AGENTSTREAM_DATABASE_URL",
)


def bench(
    quick: Annotated[
        bool, typer.Option(help="Small sizes: finishes in under 2 minutes; figures are rougher.")
    ] = False,
    events: Annotated[
        int | None,
        typer.Option(
            min=1000, help="Events for the projector and the rebuild [1,000,000; quick 20,000]."
        ),
    ] = None,
    backlog: Annotated[
        int | None,
        typer.Option(min=1000, help="Input backlog of the processor [200,000; quick 20,000]."),
    ] = None,
    faust_events: Annotated[
        int | None,
        typer.Option(min=100, help="Events for the Faust baseline [20,000; quick 3,000]."),
    ] = None,
    rate: Annotated[
        float, typer.Option(min=1.0, help="Offered load of the latency stage, runs/s.")
    ] = 500.0,
    latency_seconds: Annotated[
        float | None,
        typer.Option(min=0.5, help="How long the load is offered [20; quick 4]."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write every figure to this JSON file.")
    ] = None,
    broker: BrokerOption = BrokerKind.EMBEDDED,
) -> None:
    """Measure processor, Faust baseline, raw Kafka and Avro limits, projector, rebuild,
    end-to-end latency and dev-up time, in one run on the embedded stack (or the services
    named by AGENTSTREAM_BOOTSTRAP_SERVERS, _SCHEMA_REGISTRY_URL and _DATABASE_URL)."""
    # Imported here: the stages pull in Faust, psycopg and more, which other commands never need.
    from agentstream.projections.projector import tune_for_batches
    from agentstream.tools.harness import bench_report, bench_stages

    tune_for_batches()  # the processor and projector stages run here, tuned as their services

    report = bench_report.Report(quick=quick)
    report.sizes = {
        "projection_events": events or (20_000 if quick else 1_000_000),
        "processor_backlog": backlog or (20_000 if quick else 200_000),
        "faust_events": faust_events or (3_000 if quick else 20_000),
        "latency_offered_runs_per_s": rate,
        "latency_seconds": latency_seconds or (4.0 if quick else 20.0),
    }
    # Off a terminal rich assumes 80 columns, too narrow for the table in a log.
    screen = Console(stderr=True, width=None if sys.stderr.isatty() else 132)
    logs_off_screen("bench", screen)
    began = time.monotonic()
    configured = all(os.environ.get(name) for name in _ENDPOINTS)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=screen,
        transient=False,
    ) as progress:
        with full_stack(DEFAULT_SPEC, broker=broker) as running:
            report.figures["dev_up_ready_s"] = running.ready_seconds
            report.figures["stack_ready_s"] = running.stack.startup_seconds or 0.0
            progress.add_task(
                f"dev up: stack and services ready in {running.ready_seconds:.1f} s",
                total=1,
                completed=1,
            )
            # The dev services would sit idle on their own topics, taking CPU: stopped.
            if running.supervisor is not None:
                running.supervisor.stop()
            if not configured:
                bench_stages.measure_all(report, running.settings, progress)
        if configured:
            bench_stages.measure_all(report, load_settings(use_dev_stack=False), progress)
    report.details["seconds"] = time.monotonic() - began
    report.details["services"] = "configured" if configured else "embedded"
    report.details["broker"] = "configured" if configured else str(broker)
    screen.print(bench_report.table(report))
    for name, target in report.targets().items():
        if not target["met"]:
            screen.print(
                f"[yellow]target missed:[/yellow] {name} {target['measured']:,.1f} "
                f"(target {target['target']})"
            )
    if json_path is not None:
        json_path.write_text(json.dumps(report.as_json(), indent=2) + "\n")
        screen.print(f"figures written to {json_path}")


def register(root: typer.Typer) -> None:
    root.command("bench")(bench)
