"""``agentstream runs``: steer an agent's runs (cancel one)."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstream.processors.control.steering import cancel_run
from agentstream.tools.cli.control import ByOption, TenantOption, build, requester, send_control

__all__ = ["register", "runs_cancel"]

app = typer.Typer(help="Steer an agent's runs.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="runs")


@app.command("cancel")
def runs_cancel(
    run_id: Annotated[str, typer.Argument(help="The run to cancel (running or queued).")],
    agent: Annotated[str, typer.Option("--agent", "-a", help="The agent whose run it is.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    by: ByOption = None,
    tenant: TenantOption = "default",
) -> None:
    """Cancel a run: it ends as RunCancelled, and late results of its calls are ignored."""
    who = requester(by)
    event = build(
        lambda: cancel_run(
            agent, run_id, requested_by=who, reason=reason, tenant_id=tenant, source="cli"
        ),
        {"agent_id": "--agent", "run_id": "RUN_ID", "tenant_id": "--tenant"},
    )
    send_control(event, f"cancel of run {run_id} of {agent} requested by {who}", "runs")
