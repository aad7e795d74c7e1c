"""``agentstream demo``: the sample agent end to end on a stack of its own."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstream.processors.loading import DEFAULT_SPEC
from agentstream.tools.cli.options import BrokerOption, err, logs_off_screen, out
from agentstream.tools.devstack.full_stack import full_stack
from agentstream.tools.devstack.stack import BrokerKind


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)


def demo(
    interactive: Annotated[
        bool, typer.Option(help="Ask before granting each approval instead of auto-approving.")
    ] = False,
    broker: BrokerOption = BrokerKind.EMBEDDED,
) -> None:
    """Run the sample support agent end to end on a stack of its own, then stop everything."""
    from rich.prompt import Confirm

    from agentstream.schemas.events import ApprovalRequested
    from agentstream.streams.serde import EventSerde, registry_client
    from agentstream.tools.harness.demo import (
        QUESTIONS,
        memory_note,
        outcome_table,
        run_demo,
        timeline_table,
    )

    def decide(request: ApprovalRequested) -> str | None:
        if not interactive:
            return "demo-operator"
        question = f"approve {request.tool}({request.arguments_json}) for {request.agent_id}?"
        return "you" if Confirm.ask(question, console=err) else None

    logs_off_screen("demo", err)
    out.print(f"starting the {broker} stack and the agentstream services…")
    with full_stack(DEFAULT_SPEC, broker=broker) as running:
        out.print(
            f"ready in {running.ready_seconds:.1f}s; sending {len(QUESTIONS)} questions to the "
            "support agent (scripted model, refunds need approval, a follow-up from memory)\n"
        )
        serde = EventSerde(registry_client(running.settings.require_schema_registry_url()))
        result = run_demo(running.settings, serde, out, decide=decide)
        out.print()
        out.print(outcome_table(result))
        out.print(memory_note(result))
        out.print(timeline_table("customer-ben", result.timeline["customer-ben"]))
    out.print("everything stopped; nothing is left running")
