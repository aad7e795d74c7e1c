"""An agent for the worker tests: tools that fail in known ways, a gated one, a slow one, and a
scripted model that picks them from the user's text; and one whose tool waits for a callback.

The tools run inside the tool worker process; they write what they did to files under
``$AGENTSTREAM_TEST_LEDGER`` so the test can see each run and its idempotency key.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from agentstream.processors.core.spec import AgentSpec, Budgets, ModelSpec, RetryPolicy, tool
from agentstream.processors.workers.toolcontext import (
    AwaitCallback,
    callback_id,
    current_call,
    idempotency_key,
)
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import APPROVAL_DECISIONS, CONTROL, admin_client

LEDGER_ENV = "AGENTSTREAM_TEST_LEDGER"
APPROVAL_TIMEOUT_S = 12.0
SLOW_SECONDS = 6.0
CALLBACK_TIMEOUT_S = 5.0
QUICK_RETRY = RetryPolicy(max_attempts=3, initial_backoff_s=0.05, max_backoff_s=0.2)

_attempts: Counter[str] = Counter()


def _record(name: str, entry: dict[str, object]) -> list[dict[str, object]]:
    """Append to the tool's ledger; returns what was there before."""
    path = Path(os.environ[LEDGER_ENV]) / f"{name}.jsonl"
    before = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    with path.open("a") as ledger:
        ledger.write(json.dumps(entry) + "\n")
    return before


def read_ledger(directory: Path, name: str) -> list[dict[str, object]]:
    path = directory / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@tool(retry=QUICK_RETRY)
def flaky(item: str) -> dict[str, object]:
    """Fails twice with a dropped connection, then works."""
    key = idempotency_key()
    _attempts[key] += 1
    if _attempts[key] <= 2:
        raise ConnectionError(f"connection reset (attempt {_attempts[key]})")
    return {"item": item, "attempt": current_call().attempt}


@tool(retry=QUICK_RETRY)
def unreliable(mode: str) -> dict[str, str]:
    """Works unless its backend is down (mode 'fail')."""
    if mode == "fail":
        raise ConnectionError("the backend is down")
    return {"mode": mode}


@tool(requires_approval=True)
def transfer(account: str, amount_cents: str) -> dict[str, object]:
    """Move money: a person approves every transfer."""
    key = idempotency_key()
    _record("transfer", {"key": key, "account": account, "amount_cents": amount_cents})
    return {"account": account, "amount_cents": amount_cents, "transfer_id": key}


@tool(timeout_s=30)
def slow_write(item: str) -> dict[str, object]:
    """Slow the first time a call runs; a repeat with the same key finds its earlier write."""
    key = idempotency_key()
    before = _record("slow_write", {"key": key, "item": item, "pid": os.getpid()})
    if not any(entry["key"] == key for entry in before):
        time.sleep(SLOW_SECONDS)
    return {"item": item, "key": key}


@tool
def quick_write(item: str) -> dict[str, object]:
    """Records each run with its key, at once."""
    key = idempotency_key()
    _record("quick_write", {"key": key, "item": item, "pid": os.getpid()})
    return {"item": item, "key": key}


SCRIPT = {
    "rules": [
        {"when": r"\bflaky (?P<item>\w+)", "tool": "flaky", "arguments": {"item": "{item}"}},
        {
            "when": r"\bunreliable (?P<mode>\w+)",
            "tool": "unreliable",
            "arguments": {"mode": "{mode}"},
        },
        {
            "when": r"\btransfer (?P<amount>\d+) to (?P<account>[\w-]+)",
            "tool": "transfer",
            "arguments": {"account": "{account}", "amount_cents": "{amount}"},
        },
        {
            "when": r"\bthen (?P<amount2>\d+) to (?P<account2>[\w-]+)",
            "tool": "transfer",
            "arguments": {"account": "{account2}", "amount_cents": "{amount2}"},
        },
        {"when": r"\bslow (?P<slow>\w+)", "tool": "slow_write", "arguments": {"item": "{slow}"}},
        {
            "when": r"\bquick (?P<quick>\w+)",
            "tool": "quick_write",
            "arguments": {"item": "{quick}"},
        },
    ],
    "answer": "done: {summary}",
}


def worker_spec() -> AgentSpec:
    return AgentSpec(
        name="worker-test",
        system_prompt="Use the tools the user names.",
        model=ModelSpec(provider="scripted", name="worker-test", parameters={"script": SCRIPT}),
        tools=(flaky, unreliable, transfer, slow_write, quick_write),
        budgets=Budgets(
            max_steps=5, max_tool_calls=5, run_deadline_s=300, approval_timeout_s=APPROVAL_TIMEOUT_S
        ),
    )


@tool(on_failure="report_to_model")
def external_review(document: str) -> AwaitCallback:
    """Hands the document to reviewers elsewhere; they answer through the call's callback."""
    _record("external_review", {"key": idempotency_key(), "callback_id": callback_id()})
    return AwaitCallback(timeout_s=CALLBACK_TIMEOUT_S, detail=f"review of {document} requested")


CALLBACK_SCRIPT = {
    "rules": [
        {
            "when": r"\breview (?P<document>\w+)",
            "tool": "external_review",
            "arguments": {"document": "{document}"},
        },
    ],
    "answer": "done: {summary}",
}


def callback_spec() -> AgentSpec:
    return AgentSpec(
        name="callback-test",
        system_prompt="Send documents for review.",
        model=ModelSpec(
            provider="scripted", name="callback-test", parameters={"script": CALLBACK_SCRIPT}
        ),
        tools=(external_review,),
        budgets=Budgets(max_steps=5, max_tool_calls=5, run_deadline_s=300),
    )


def accept_timestamps_ahead(settings: Settings, ahead: timedelta) -> None:
    """What a drill with a shifted timer clock (``worker timers run --clock-offset``) asks of
    the broker: Apache Kafka 4 refuses records stamped more than an hour ahead
    (``message.timestamp.after.max.ms``) unless their topic allows more."""
    allowed = str(int(ahead.total_seconds() * 1000))
    resources = [
        ConfigResource(
            ConfigResource.Type.TOPIC,
            settings.topic(spec.name),
            incremental_configs=[
                ConfigEntry(
                    "message.timestamp.after.max.ms",
                    allowed,
                    incremental_operation=AlterConfigOpType.SET,
                )
            ],
        )
        for spec in (CONTROL, APPROVAL_DECISIONS)
    ]
    admin = admin_client(settings)  # kept until the futures are done: they die with it
    for future in admin.incremental_alter_configs(resources).values():
        future.result(15)
