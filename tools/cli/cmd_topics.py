"""``agentstream topics``: create and inspect agentstream's topics."""

from __future__ import annotations

import typer
from rich.table import Table

from agentstream.streams.runtime.settings import (
    load_settings,
)
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
    """Create missing topics and check that agent topics are co-partitioned."""
    settings = load_settings()
    statuses = ensure_topics(settings)
    out.print(_topics_table(f"topics on {settings.bootstrap_servers}", statuses))


@app.command("describe")
def topics_describe() -> None:
    """Show every declared topic and whether it exists on the cluster."""
    settings = load_settings()
    statuses = describe_topics(settings)
    out.print(_topics_table(f"topics on {settings.bootstrap_servers}", statuses))
    if any(s.action == "missing" for s in statuses):
        err.print("some topics are missing: run `agentstream topics ensure`")
        raise typer.Exit(1)
