"""Options that several commands share, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstream.tools.stack import BrokerKind

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
