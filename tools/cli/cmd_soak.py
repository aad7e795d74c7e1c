"""``agentstream soak``: a steady load through every service for minutes, on an embedded stack
of its own, reporting throughput and each service's memory over time."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agentstream.processors.loading import DEFAULT_SPEC
from agentstream.tools.cli.options import BrokerOption, logs_off_screen
from agentstream.tools.devstack.full_stack import full_stack
from agentstream.tools.devstack.stack import BrokerKind
from agentstream.tools.harness.soak_driver import Sample, SoakConfig, SoakReport, run_soak

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
SERVICES = ("processor", "tool-worker", "model-worker", "approval-timer", "projector")
#: short column titles, so the table fits a narrow terminal
TITLES = ("processor", "tools", "models", "timer", "projector")


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def samples_table(report: SoakReport) -> Table:
    table = Table(title="soak: throughput and memory (RSS, MB) over time")
    for column in ("t (s)", "sent", "ended", "ended/s", *TITLES):
        table.add_column(column, justify="right")
    for s in report.samples:
        table.add_row(
            f"{s.at_s:.0f}",
            str(s.sent),
            str(s.ended),
            f"{s.throughput:.1f}",
            *(_mb(s.rss_mb.get(name)) for name in SERVICES),
        )
    return table


def memory_table(report: SoakReport) -> Table:
    table = Table(title="memory (MB); slope and growth over the second half")
    for column in ("service", "first", "last", "peak", "MB/min", "growth", "flat"):
        table.add_column(column, justify="right")
    for m in report.memory:
        table.add_row(
            m.service,
            f"{m.first_mb:.0f}",
            f"{m.last_mb:.0f}",
            f"{m.peak_mb:.0f}",
            f"{m.slope_mb_per_min:+.2f}",
            f"{m.growth_mb:+.1f}",
            "[green]yes[/green]" if m.flat else "[red]no[/red]",
        )
    return table


def soak(
    minutes: Annotated[float, typer.Option(min=0.0, help="How long the load runs.")] = 5.0,
    seconds: Annotated[
        float | None, typer.Option(min=1.0, help="The duration in seconds (instead of minutes).")
    ] = None,
    rate: Annotated[float, typer.Option(min=0.1, help="Runs started per second.")] = 20.0,
    agents: Annotated[int, typer.Option(min=1, help="Agents the runs go to, round robin.")] = 1000,
    sample_every: Annotated[float, typer.Option(min=1.0, help="Seconds between samples.")] = 10.0,
    spec: Annotated[str, typer.Option(help="The agent, as package.module:attribute.")] = (
        DEFAULT_SPEC
    ),
    broker: BrokerOption = BrokerKind.EMBEDDED,
) -> None:
    """Run a steady load through every service and report throughput and memory; exits 1 if a
    service's memory kept growing over the second half or a run did not end."""
    duration = seconds if seconds is not None else minutes * 60
    config = SoakConfig(
        seconds=duration, rate=rate, agents=agents, sample_every_s=sample_every, spec=spec
    )

    def show(sample: Sample) -> None:
        memory = " ".join(f"{n}={_mb(sample.rss_mb.get(n))}" for n in SERVICES)
        err.print(
            f"t={sample.at_s:5.0f}s sent={sample.sent} ended={sample.ended} "
            f"({sample.throughput:.1f}/s) RSS MB {memory}"
        )

    logs_off_screen("soak", err)
    err.print(f"starting a stack of its own ({broker} broker)…")
    with full_stack(spec, services=False, broker=broker) as running:
        tag = uuid.uuid4().hex[:6]
        settings = running.settings.model_copy(update={"topic_prefix": f"soak{tag}."})
        report = run_soak(
            settings, running.stack.workdir, config, schema=f"soak_{tag}", on_sample=show
        )
    out.print(samples_table(report))
    out.print(memory_table(report))
    rate_seen = report.ended / duration if duration else 0.0
    out.print(
        f"{report.sent} runs sent at {rate:g}/s for {duration:.0f}s, {report.ended} ended "
        f"(≈{rate_seen:.1f} runs/s); memory "
        + ("[green]flat[/green]" if report.flat else "[red]NOT flat[/red]")
    )
    for problem in report.problems:
        out.print(f"[red]FAILED[/red] {problem}")
    if not report.ok:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.command("soak")(soak)
