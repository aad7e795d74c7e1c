"""``agentstream chaos``: the chaos test at any size, on an embedded stack of its own."""

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
from agentstream.tools.harness.chaos_driver import ChaosConfig, ChaosReport, run_chaos

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def figures_table(report: ChaosReport) -> Table:
    v = report.verdict
    table = Table(title="chaos run")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("events on the agent topics", v.events),
        ("runs started", v.runs),
        ("runs completed / failed", f"{v.completed} / {v.failed}"),
        ("outcome records (re-sent copies included)", v.outcome_records),
        ("SIGKILLs", sum(report.kills.values())),
        *((f"  of the {name}", n) for name, n in sorted(report.kills.items())),
        ("lost runs", v.lost),
        ("duplicated outcomes or transitions", v.duplicated),
        ("applied events checked against the fold", v.applied_checked),
        ("dead letters (expected distinct)", f"{v.dead_letters} ({v.dead_letters_expected})"),
        ("read models equal a rebuild", v.projection_equal),
        (
            "seconds under kills / settling / total",
            (
                f"{report.chaos_seconds:.0f} / {report.settle_seconds:.0f} / "
                f"{report.total_seconds:.0f}"
            ),
        ),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def chaos(
    agents: Annotated[int, typer.Option(min=1, help="Agents in the workload.")] = 200,
    runs_per_agent: Annotated[int, typer.Option(min=1, max=20, help="Inputs per agent.")] = 2,
    kills: Annotated[int, typer.Option(min=0, help="SIGKILLs of random services.")] = 50,
    seed: Annotated[int, typer.Option(help="Seeds the workload, the victims and the moments.")] = 1,
    min_gap: Annotated[
        float, typer.Option(min=0.0, help="Shortest pause between kills (s).")
    ] = 0.4,
    max_gap: Annotated[float, typer.Option(min=0.0, help="Longest pause between kills (s).")] = 2.0,
    spec: Annotated[str, typer.Option(help="The agent, as package.module:attribute.")] = (
        DEFAULT_SPEC
    ),
    broker: BrokerOption = BrokerKind.EMBEDDED,
    broker_kills: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="How many of the kills hit the broker itself [kafka: 3; embedded: 0, it keeps "
            "topics in memory only].",
        ),
    ] = None,
    transactions: Annotated[
        bool,
        typer.Option(help="The processor writes each batch in a Kafka transaction (kafka only)."),
    ] = False,
    scale_out: Annotated[
        bool,
        typer.Option(
            help="Instead of kills: a second and third processor, a second tool worker, model "
            "worker and projector join under load and leave again."
        ),
    ] = False,
) -> None:
    """Run agents through every service while random services are SIGKILLed and restarted,
    then check: one outcome per run, no transition applied twice, read models equal a rebuild,
    and only the intended records in the DLQ. Exits 1 if any check fails."""
    logs_off_screen("chaos", err)
    if scale_out:
        _scale_out(agents, runs_per_agent, seed, spec, broker)
        return
    if broker is BrokerKind.EMBEDDED and (broker_kills or transactions):
        err.print(
            "the embedded broker loses its topics on a restart and shows aborted transactions "
            "to every reader: broker kills and transactions need --broker kafka"
        )
        raise typer.Exit(2)
    if broker_kills is None:
        broker_kills = min(3, kills) if broker is BrokerKind.KAFKA else 0
    config = ChaosConfig(
        agents=agents,
        runs_per_agent=runs_per_agent,
        kills=kills,
        seed=seed,
        min_gap_s=min_gap,
        max_gap_s=max(min_gap, max_gap),
        spec=spec,
        broker_kills=min(broker_kills, kills),
    )
    err.print(f"starting a stack of its own ({broker} broker)…")
    with full_stack(spec, services=False, broker=broker) as running:
        tag = uuid.uuid4().hex[:6]
        settings = running.settings.model_copy(
            update={"topic_prefix": f"chaos{tag}.", "processor_transactions": transactions}
        )
        report = run_chaos(
            settings,
            running.stack.workdir,
            config,
            schema=f"chaos_{tag}",
            progress=err.print,
            broker=running.stack.broker if config.broker_kills else None,
        )
    out.print(figures_table(report))
    _verdict(report.figures(), report.verdict.problems, "nothing lost or applied twice")


def _scale_out(agents: int, runs_per_agent: int, seed: int, spec: str, broker: BrokerKind) -> None:
    from agentstream.tools.harness.scale_driver import ScaleConfig, run_scale_out

    config = ScaleConfig(agents=agents, runs_per_agent=runs_per_agent, seed=seed, spec=spec)
    err.print(f"starting a stack of its own ({broker} broker)…")
    with full_stack(spec, services=False, broker=broker) as running:
        tag = uuid.uuid4().hex[:6]
        settings = running.settings.model_copy(update={"topic_prefix": f"scale{tag}."})
        report = run_scale_out(
            settings, running.stack.workdir, config, schema=f"scale_{tag}", progress=err.print
        )
    for at, move, processors in report.moves:
        out.print(f"{at:6.1f}s  {move:<22} processors: {processors}")
    _verdict(report.figures(), report.verdict.problems, "while members joined and left")


def _verdict(figures: str, problems: list[str], passed: str) -> None:
    out.print(figures)
    for problem in problems:
        out.print(f"[red]FAILED[/red] {problem}")
    if problems:
        raise typer.Exit(1)
    out.print(f"[green]passed[/green]: every run ended once, {passed}")


def register(root: typer.Typer) -> None:
    root.command("chaos")(chaos)
