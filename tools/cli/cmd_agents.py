"""``agentstream agents``: pause and resume an agent."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstream.processors.control.steering import pause_agent, resume_agent
from agentstream.tools.cli.control import ByOption, TenantOption, build, requester, send_control

__all__ = ["agents_pause", "agents_resume", "register"]

app = typer.Typer(help="Pause and resume agents.", no_args_is_help=True)

_AgentArgument = Annotated[str, typer.Argument(help="The agent's id.")]
_HINTS = {"agent_id": "AGENT", "tenant_id": "--tenant"}


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="agents")


@app.command("pause")
def agents_pause(
    agent: _AgentArgument,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    by: ByOption = None,
    tenant: TenantOption = "default",
) -> None:
    """Pause an agent: it requests nothing and starts no run until resumed; inputs queue."""
    who = requester(by)
    event = build(
        lambda: pause_agent(agent, requested_by=who, reason=reason, tenant_id=tenant, source="cli"),
        _HINTS,
    )
    send_control(event, f"pause of {agent} requested by {who}", "agents")


@app.command("resume")
def agents_resume(
    agent: _AgentArgument, by: ByOption = None, tenant: TenantOption = "default"
) -> None:
    """Resume a paused agent: held calls go out and queued inputs start."""
    who = requester(by)
    event = build(
        lambda: resume_agent(agent, requested_by=who, tenant_id=tenant, source="cli"), _HINTS
    )
    send_control(event, f"resume of {agent} requested by {who}", "agents")
