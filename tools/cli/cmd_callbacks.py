"""``agentstream callbacks``: answer a tool call that waits for another system."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentstream.processors.control.steering import (
    SteeringError,
    callback_result,
    complete_callback,
)
from agentstream.tools.cli.control import ByOption, TenantOption, build, requester, send_control

__all__ = ["callbacks_complete", "register"]

app = typer.Typer(help="Answer tool calls that wait for a callback.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="callbacks")


def _result_text(result: str | None, result_file: Path | None) -> tuple[str, str]:
    """The result as given, and the option that gave it."""
    if (result is None) == (result_file is None):
        raise typer.BadParameter(
            "give exactly one of --result and --result-file", param_hint="--result"
        )
    if result_file is None:
        return str(result), "--result"
    try:
        return result_file.read_text(encoding="utf-8"), "--result-file"
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(
            f"cannot read {result_file}: {exc}", param_hint="--result-file"
        ) from exc


@app.command("complete")
def callbacks_complete(
    callback_id: Annotated[
        str, typer.Argument(help="The callback id the waiting tool call was given.")
    ],
    agent: Annotated[str, typer.Option("--agent", "-a", help="The agent whose call waits.")],
    result: Annotated[
        str | None, typer.Option(help="The result, one JSON value (the tool's answer).")
    ] = None,
    result_file: Annotated[
        Path | None, typer.Option(help="A file holding the result, one JSON value.")
    ] = None,
    by: ByOption = None,
    tenant: TenantOption = "default",
) -> None:
    """Complete a callback: the waiting tool call gets the result and the run goes on."""
    text, given_by = _result_text(result, result_file)
    try:
        checked = callback_result(text)
    except SteeringError as exc:
        raise typer.BadParameter(str(exc), param_hint=given_by) from exc
    who = requester(by)
    event = build(
        lambda: complete_callback(
            agent, callback_id, checked, completed_by=who, tenant_id=tenant, source="cli"
        ),
        {"agent_id": "--agent", "callback_id": "CALLBACK_ID", "tenant_id": "--tenant"},
    )
    send_control(event, f"callback {callback_id} of {agent} completed by {who}", "callbacks")
