"""``agentstream topics``: create and inspect agentstream's topics."""

from __future__ import annotations

import typer
from rich.table import Table

from agentstream.streams.runtime.settings import load_settings
from agentstream.streams.subjects import ensure_subjects
from agentstream.streams.topics import TopicStatus, describe_topics, ensure_topics
from agentstream.tools.cli.options import err, out

app = typer.Typer(help="Create and inspect agentstream's topics.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="topics")


def _topics_table(title: str, statuses: list[TopicStatus]) -> Table:
    table = Table(title=title)
    for column in ("topic", "partitions", "cleanup", "carries", "status"):
        table.add_column(column)
    for status in statuses:
        table.add_row(
            status.physical_name,
            str(status.partitions) if status.partitions is not None else "-",
            status.spec.cleanup_policy,
            ", ".join(t.__name__ for t in status.spec.value_types),
            status.action,
        )
    return table


@app.command("ensure")
def topics_ensure() -> None:
    """Create missing topics, check that agent topics are co-partitioned, and register every
    topic's schemas in the schema registry with the compatibility level it needs."""
    settings = load_settings()
    statuses = ensure_topics(settings)
    out.print(_topics_table(f"topics on {settings.bootstrap_servers}", statuses))
    if settings.schema_registry_url is None:
        err.print("no schema registry configured: subjects not registered")
        return
    subjects = Table(title=f"subjects in {settings.schema_registry_url}")
    for column in ("subject", "version", "compatibility"):
        subjects.add_column(column)
    for subject in ensure_subjects(settings):
        subjects.add_row(subject.subject, str(subject.version), subject.compatibility)
    out.print(subjects)


@app.command("describe")
def topics_describe() -> None:
    """Show every declared topic and whether it exists on the cluster."""
    settings = load_settings()
    statuses = describe_topics(settings)
    out.print(_topics_table(f"topics on {settings.bootstrap_servers}", statuses))
    if any(s.action == "missing" for s in statuses):
        err.print("some topics are missing: run `agentstream topics ensure`")
        raise typer.Exit(1)
