"""``agentstream memory``: record and erase the facts an agent keeps across runs."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstream.processors.control.steering import erase_memory, record_memory
from agentstream.tools.cli.control import ByOption, TenantOption, build, requester, send_control

__all__ = ["memory_erase", "memory_remember", "register"]

app = typer.Typer(help="The facts an agent keeps across runs.", no_args_is_help=True)

_AgentArgument = Annotated[str, typer.Argument(help="The agent's id.")]
_HINTS = {"agent_id": "AGENT", "tenant_id": "--tenant", "key": "KEY", "value": "VALUE"}


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="memory")


@app.command("remember")
def memory_remember(
    agent: _AgentArgument,
    key: Annotated[str, typer.Argument(help="The fact's key (a new value replaces the old).")],
    value: Annotated[str, typer.Argument(help="The fact, as text.")],
    by: ByOption = None,
    tenant: TenantOption = "default",
) -> None:
    """Record a fact the agent will know in its next runs."""
    who = requester(by)
    event = build(
        lambda: record_memory(agent, key, value, recorded_by=who, tenant_id=tenant, source="cli"),
        _HINTS,
    )
    send_control(event, f"fact {key!r} recorded for {agent} by {who}", "memory")


@app.command("erase")
def memory_erase(
    agent: _AgentArgument,
    key: Annotated[str | None, typer.Argument(help="The fact to erase (or --all).")] = None,
    erase_all: Annotated[
        bool,
        typer.Option("--all", help="Erase every fact and the conversation the agent remembers."),
    ] = False,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    by: ByOption = None,
    tenant: TenantOption = "default",
) -> None:
    """Erase one fact, or with --all everything the agent remembers.

    The text is scrubbed from the agent's state and the read models; the audit trail keeps
    that it was erased, by whom, not what it said."""
    if erase_all == (key is not None):
        raise typer.BadParameter(
            "name one KEY, or pass --all to erase everything (not both)", param_hint="KEY"
        )
    who = requester(by)
    event = build(
        lambda: erase_memory(
            agent, key, requested_by=who, reason=reason, tenant_id=tenant, source="cli"
        ),
        _HINTS,
    )
    what = "all memory" if key is None else f"fact {key!r}"
    send_control(event, f"erasure of {what} of {agent} requested by {who}", "memory")
