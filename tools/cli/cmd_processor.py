"""``agentstream processor run``: the stream processor."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstream.processors.loading import DEFAULT_SPEC, load_catalog
from agentstream.streams.runtime.gc_tuning import collect_rarely
from agentstream.streams.runtime.health import observability
from agentstream.streams.runtime.settings import load_settings
from agentstream.streams.topics import ensure_topics
from agentstream.tools.cli.options import MetricsPortOption, err

app = typer.Typer(help="The processor: advances agents' state machines.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="processor")


@app.command("run")
def processor_run(
    spec: Annotated[
        list[str] | None,
        typer.Option(
            "--spec",
            help="The agents, as package.module:attribute: an AgentSpec, a list of specs, or a "
            "Catalog; repeatable. Specs of one name are versions of one kind (new runs start on "
            "the newest, runs in flight finish on theirs); each name is a kind served here, the "
            "first the default for inputs that name none.",
        ),
    ] = None,
    group: Annotated[str, typer.Option(help="Consumer group shared by all instances.")] = (
        "agentstream-processor"
    ),
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
    instance_id: Annotated[
        str | None,
        typer.Option(help="Static group membership id: a restart resumes without a rebalance."),
    ] = None,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Run one processor instance until SIGTERM or Ctrl-C; start several to share the load."""
    from agentstream.processors.engine.loop import ProcessorEngine
    from agentstream.streams.serde import EventSerde, registry_client

    settings = load_settings()
    catalog = load_catalog(spec or [DEFAULT_SPEC])
    ensure_topics(settings)
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    engine = ProcessorEngine(
        settings,
        catalog,
        serde=serde,
        group_id=group,
        batch_size=batch_size,
        instance_id=instance_id,
        transactional=settings.processor_transactions,
    )
    engine.install_signal_handlers()
    collect_rarely()
    served = "; ".join(
        f"{k.newest.name!r} " + ", ".join(f"v{v.version} ({v.content_hash})" for v in k.versions)
        for k in catalog.kinds
    )
    err.print(f"processor running agents {served} in group {group!r}; Ctrl-C stops it")
    with observability("processor", engine.readiness, settings, metrics_port):
        stats = engine.run()
    err.print(
        f"processor stopped: {stats.applied} applied, {stats.emitted} emitted, "
        f"{stats.duplicates} duplicates, {stats.dead_lettered} dead-lettered"
    )
