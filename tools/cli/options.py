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
