"""What the steering commands (``runs``, ``agents``, ``memory``, ``callbacks``) share: who
asks, the agent's tenant, building the event with usage errors for bad values, and sending it to
agent.control with one line of answer once the broker acknowledged it."""

from __future__ import annotations

import getpass
from collections.abc import Callable, Mapping
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from agentstream.processors.control.steering import SteeringEvent
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import load_settings
from agentstream.tools.cli.options import err, logs_off_screen, out

__all__ = [
    "ByOption",
    "TenantOption",
    "build",
    "requester",
    "send_control",
]

E = TypeVar("E", bound=SteeringEvent)

ByOption = Annotated[
    str | None,
    typer.Option(
        "--by", help="Who asks, recorded in the event (default: your operating-system user)."
    ),
]
TenantOption = Annotated[str, typer.Option(help="The agent's tenant.")]


def requester(by: str | None) -> str:
    """``--by``, else the operating-system user."""
    if by is None:
        try:
            by = getpass.getuser()
        except (OSError, KeyError):  # no login name and no passwd entry (some containers)
            raise typer.BadParameter(
                "no user name to record: pass --by NAME", param_hint="--by"
            ) from None
    if not by.strip():
        raise typer.BadParameter("must name someone", param_hint="--by")
    return by


def build(make: Callable[[], E], hints: Mapping[str, str]) -> E:
    """The event ``make`` builds, or a usage error naming the argument (``hints`` maps an event
    field to the argument or option that gave it) and what is wrong with it."""
    try:
        return make()
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = str(problem["loc"][-1]) if problem["loc"] else ""
        raise typer.BadParameter(problem["msg"], param_hint=hints.get(field, field)) from exc


def send_control(event: SteeringEvent, done: str, command: str) -> None:
    """Send ``event`` to its topic, wait for the broker, and say ``done`` and where it went."""
    logs_off_screen(command, err)
    with AgentStreamProducer(load_settings()) as producer:
        where = producer.send(event)
    out.print(
        f"{done} (event {event.envelope.event_id}, {where.topic}[{where.partition}]@{where.offset})"
    )
