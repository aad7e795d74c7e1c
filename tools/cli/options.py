"""Options and conventions that several commands share, declared once."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from agentstream.streams.runtime.logs import log_to_file
from agentstream.streams.runtime.settings import agentstream_home
from agentstream.tools.devstack.stack import BrokerKind

BrokerOption = Annotated[
    BrokerKind,
    typer.Option(
        "--broker",
        case_sensitive=False,
        help=(
            "The stack's broker: embedded (Tansu, no Java) or kafka (Apache Kafka from its jars "
            "on Maven Central, run in KRaft mode; needs java and mvn)."
        ),
    ),
]


def logs_off_screen(command: str, screen: Console) -> None:
    """For commands that draw tables and progress: this process's own logs go to a file under
    ``AGENTSTREAM_HOME/logs`` (named on screen), not between the rows; ``--verbose`` keeps them
    on screen."""
    path = log_to_file(agentstream_home() / "logs" / f"{command}.log")
    if path is not None:
        screen.print(f"[dim]logs: {path}[/dim]")


#: the command line's two screens: results on stdout, progress and errors on stderr
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

#: ``--metrics-port`` of every long-running service.
MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=65535,
        help="Serve /metrics, /healthz and /readyz on this port (0: a free one, logged); "
        "default AGENTSTREAM_METRICS_PORT, else off.",
    ),
]

SchemaOption = Annotated[
    str,
    typer.Option(
        envvar="AGENTSTREAM_PROJECTION_SCHEMA",
        help="PostgreSQL schema of the read models (a dedicated one: rebuild swaps it).",
    ),
]

SpecsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--spec",
        help="An agent, as package.module:attribute (an AgentSpec, or a list of its "
        "versions); repeatable.",
    ),
]
ConcurrencyOption = Annotated[
    int, typer.Option(min=1, max=1000, help="Calls run at once by this worker.")
]
InstanceOption = Annotated[
    str | None,
    typer.Option(help="Static group membership id: a restart resumes without a rebalance."),
]
ThresholdOption = Annotated[
    int, typer.Option(min=1, help="Consecutive failures that open a circuit breaker.")
]
CooldownOption = Annotated[
    float, typer.Option(min=0.0, help="Seconds an open breaker waits before a probe call.")
]
