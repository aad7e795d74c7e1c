"""``agentstream db`` and ``agentstream projections``: the read models in PostgreSQL."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstream.streams.runtime.health import observability
from agentstream.streams.runtime.settings import load_settings
from agentstream.streams.topics import ensure_topics
from agentstream.tools.cli import cmd_replay
from agentstream.tools.cli.options import MetricsPortOption, SchemaOption, err, out

db_app = typer.Typer(help="The projection database: schema migrations.", no_args_is_help=True)
projections_app = typer.Typer(
    help="The projector and its PostgreSQL read models (audit log, agents, runs, ...).",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    root.add_typer(db_app, name="db")
    root.add_typer(projections_app, name="projections")


@db_app.command("migrate")
def db_migrate(schema: SchemaOption = "projections") -> None:
    """Apply pending migrations to the projection schema (creating it if needed)."""
    from agentstream.projections.migrate import migrate

    settings = load_settings()
    applied = migrate(settings.require_database_url(), schema)
    if applied:
        out.print(f"schema {schema}: applied {', '.join(applied)}")
    else:
        out.print(f"schema {schema}: up to date")


@projections_app.command("run")
def projections_run(
    schema: SchemaOption = "projections",
    group: Annotated[str, typer.Option(help="Consumer group shared by all instances.")] = (
        "agentstream-projector"
    ),
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 5000,
    instance_id: Annotated[
        str | None,
        typer.Option(help="Static group membership id: a restart resumes without a rebalance."),
    ] = None,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before starting.")] = True,
    max_backoff: Annotated[
        float, typer.Option(min=0.1, help="Longest pause (s) between retries while down.")
    ] = 10.0,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Run one projector until SIGTERM or Ctrl-C: every agent topic into PostgreSQL."""
    from agentstream.projections.migrate import migrate as apply_migrations
    from agentstream.projections.projector import Projector, tune_for_batches
    from agentstream.streams.runtime.backoff import Backoff

    settings = load_settings()
    ensure_topics(settings)
    if migrate:
        apply_migrations(settings.require_database_url(), schema)
    projector = Projector(
        settings,
        schema=schema,
        group_id=group,
        batch_size=batch_size,
        instance_id=instance_id,
        backoff=Backoff(maximum=max_backoff),
    )
    projector.install_signal_handlers()
    tune_for_batches()
    err.print(f"projector writing schema {schema!r} in group {group!r}; Ctrl-C stops it")
    with observability("projector", projector.readiness, settings, metrics_port):
        stats = projector.run()
    err.print(
        f"projector stopped: {stats.applied} events applied, {stats.duplicates} duplicates, "
        f"{stats.dead_lettered} dead-lettered"
    )


@projections_app.command("rebuild")
def projections_rebuild(
    schema: SchemaOption = "projections",
    swap: Annotated[
        bool,
        typer.Option(help="Replace the live tables with the rebuilt ones (else keep both)."),
    ] = True,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 5000,
) -> None:
    """Rebuild the read models from the topics, check them against the live ones, swap."""
    from agentstream.projections.projector import tune_for_batches

    settings = load_settings()
    tune_for_batches()
    cmd_replay.rebuild_all(settings, schema, swap, batch_size)
