"""``agentstream approvals``: human approvals of gated tool calls."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agentstream.streams.runtime.settings import load_settings
from agentstream.tools.cli.options import out

app = typer.Typer(help="Human approvals of gated tool calls.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="approvals")


@app.command("list")
def approvals_list(
    show_all: Annotated[
        bool, typer.Option("--all", help="Also decided, expired and overdue ones.")
    ] = False,
) -> None:
    """Show the approval requests waiting for a decision."""
    from agentstream.processors.control.approvals import ApprovalsClient

    client = ApprovalsClient(load_settings())
    statuses = client.statuses() if show_all else client.pending()
    table = Table(title="approvals" if show_all else "pending approvals")
    for column in ("call id", "agent", "tool", "arguments", "arguments hash", "expires", "state"):
        table.add_column(column, overflow="fold")
    for status in statuses:
        request = status.request
        table.add_row(
            request.call_id,
            request.envelope.agent_id,
            request.tool,
            request.arguments_json,
            request.arguments_hash[:16],
            request.expires_at.isoformat(timespec="seconds"),
            status.state(),
        )
    out.print(table)


def _decide(
    call_id: str, approve: bool, approver: str, arguments_hash: str, comment: str | None
) -> None:
    from agentstream.processors.control.approvals import ApprovalsClient

    event = ApprovalsClient(load_settings()).decide(
        call_id, approve=approve, approver=approver, arguments_hash=arguments_hash, comment=comment
    )
    verb = "approved" if approve else "denied"
    out.print(f"{verb} call {call_id} as {approver} (event {event.envelope.event_id})")


_CallIdArgument = Annotated[str, typer.Argument(help="The call id, from `approvals list`.")]
_ApproverOption = Annotated[str, typer.Option(help="Who decides (recorded in the event).")]
_HashOption = Annotated[
    str,
    typer.Option(
        "--arguments-hash",
        help="The arguments hash you checked (from `approvals list`; a prefix of 8+ characters).",
    ),
]
_CommentOption = Annotated[str | None, typer.Option(help="Why, for the audit trail.")]


@app.command("approve")
def approvals_approve(
    call_id: _CallIdArgument,
    approver: _ApproverOption,
    arguments_hash: _HashOption,
    comment: _CommentOption = None,
) -> None:
    """Grant a pending approval: the gated tool call runs."""
    _decide(call_id, True, approver, arguments_hash, comment)


@app.command("deny")
def approvals_deny(
    call_id: _CallIdArgument,
    approver: _ApproverOption,
    arguments_hash: _HashOption,
    comment: _CommentOption = None,
) -> None:
    """Deny a pending approval: the model is told the call was denied."""
    _decide(call_id, False, approver, arguments_hash, comment)
