"""``agentstream demo``: the sample agent, or the sample team, end to end on a stack of its own."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstream.tools.cli.options import BrokerOption, err, logs_off_screen, out
from agentstream.tools.devstack.full_stack import full_stack
from agentstream.tools.devstack.stack import BrokerKind


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)


def demo(
    interactive: Annotated[
        bool, typer.Option(help="Ask before granting each approval instead of auto-approving.")
    ] = False,
    team: Annotated[
        bool,
        typer.Option(
            help="Run the sample team instead: a triage agent asks an orders and a policy agent "
            "at once, and hands refunds over to a refunds agent."
        ),
    ] = False,
    broker: BrokerOption = BrokerKind.EMBEDDED,
) -> None:
    """Run the sample support agent (or, with --team, the sample team of agents) end to end on
    a stack of its own, then stop everything."""
    from rich.prompt import Confirm

    from agentstream.schemas.events import ApprovalRequested
    from agentstream.streams.serde import EventSerde, registry_client
    from agentstream.tools.harness.demo import (
        SUPPORT,
        TEAM,
        DemoResult,
        conversation_trees,
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

    def report(result: DemoResult) -> None:
        out.print(outcome_table(result, out.width))
        if team:
            for tree in conversation_trees(result):
                # soft wrapping would crop a long branch at the terminal's edge
                out.print(tree, soft_wrap=False)
            return
        out.print(memory_note(result))
        out.print(timeline_table("customer-ben", result.timeline["customer-ben"]))

    scenario = TEAM if team else SUPPORT
    logs_off_screen("demo", err)
    out.print(f"starting the {broker} stack and the agentstream services…")
    with full_stack(scenario.spec, broker=broker) as running:
        out.print(
            f"ready in {running.ready_seconds:.1f}s; sending {len(scenario.questions)} questions "
            f"to {scenario.audience}\n"
        )
        serde = EventSerde(registry_client(running.settings.require_schema_registry_url()))
        result = run_demo(running.settings, serde, out, decide=decide, scenario=scenario)
        out.print()
        report(result)
    out.print("everything stopped; nothing is left running")
