"""Agents for the outage tests: a tool whose endpoint hangs, and a quick one beside it.

The hanging tool blocks its thread far longer than its timeout, like an HTTP call to a server
that accepted the connection and never answers; the worker must time it out, retry, open its
breaker, report the run, and keep serving the quick tool meanwhile.
"""

from __future__ import annotations

import time

from agentstream.processors.core.spec import AgentSpec, Budgets, ModelSpec, RetryPolicy, tool

HANG_S = 6.0
TIMEOUT_S = 0.5
FAST_RETRY = RetryPolicy(max_attempts=2, initial_backoff_s=0.05, max_backoff_s=0.1)


@tool(timeout_s=TIMEOUT_S, retry=FAST_RETRY)
def hanging_lookup(item: str) -> dict[str, str]:
    """Asks a backend that never answers in time."""
    time.sleep(HANG_S)
    return {"item": item, "late": "yes"}


@tool(timeout_s=5.0)
def quick_lookup(item: str) -> dict[str, str]:
    """Answers at once."""
    return {"item": item, "status": "ok"}


SCRIPT = {
    "rules": [
        {"when": r"\bhang (?P<h>\w+)", "tool": "hanging_lookup", "arguments": {"item": "{h}"}},
        {"when": r"\bquick (?P<q>\w+)", "tool": "quick_lookup", "arguments": {"item": "{q}"}},
    ],
    "answer": "done: {summary}",
}


def outage_spec() -> AgentSpec:
    return AgentSpec(
        name="outage-test",
        system_prompt="Use the tools the user names.",
        model=ModelSpec(provider="scripted", name="outage-test", parameters={"script": SCRIPT}),
        tools=(hanging_lookup, quick_lookup),
        budgets=Budgets(max_steps=4, max_tool_calls=4, run_deadline_s=300),
    )
