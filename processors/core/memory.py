"""What an agent keeps across runs: past turns of its conversation and facts by key.

Pure functions over the state's values. Every bound is applied the same way on every replay:
the oldest turn or fact goes first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from agentstream.processors.core.spec import Memory
from agentstream.processors.core.state import ChatMessage, Fact, RunState, Turn, evolve

__all__ = [
    "ERASED",
    "forget",
    "keep_fact",
    "keep_turn",
    "scrub_run",
    "system_prompt",
]

#: What an erased text reads as wherever it was quoted.
ERASED = "[erased]"


def keep_turn(
    conversation: tuple[Turn, ...], run: RunState, output: str, memory: Memory
) -> tuple[Turn, ...]:
    """``conversation`` with the completed ``run`` as its newest turn, within ``memory``."""
    if memory.turns == 0:
        return ()
    own = run.messages[run.history_len :]
    answer = ChatMessage(role="assistant", content=output)
    if memory.tool_results:
        # the run's own messages end with the answer already
        messages = own if own and own[-1].role == "assistant" else (*own, answer)
    else:
        messages = (own[0], answer)
    kept = (*conversation, Turn(run_id=run.run_id, messages=messages))[-memory.turns :]
    total = sum(t.size for t in kept)
    while kept and total > memory.max_bytes:
        total -= kept[0].size
        kept = kept[1:]
    return kept


def keep_fact(facts: tuple[Fact, ...], fact: Fact, max_facts: int) -> tuple[Fact, ...]:
    """``facts`` with ``fact`` as the newest (replacing its key), at most ``max_facts``."""
    kept = (*(f for f in facts if f.key != fact.key), fact)
    return kept[-max_facts:]


def system_prompt(prompt: str, facts: Sequence[Fact]) -> str:
    """The spec's prompt, and the facts the agent keeps, newest last."""
    if not facts:
        return prompt
    listed = "\n".join(f"- {f.key}: {f.value}" for f in facts)
    remembered = f"What you remember from earlier conversations:\n{listed}"
    return f"{prompt}\n\n{remembered}" if prompt else remembered


def _spellings(secret: str) -> list[str]:
    """The text as it appears raw, inside a JSON string, and inside JSON nested in JSON; in
    JSON both as UTF-8 and as \\u escapes (what ``json.dumps`` writes by default)."""
    spellings = {secret}
    for ascii_only in (False, True):
        once = json.dumps(secret, ensure_ascii=ascii_only)[1:-1]
        spellings |= {once, json.dumps(once, ensure_ascii=ascii_only)[1:-1]}
    return sorted(spellings, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if not secret:
            continue
        for spelling in _spellings(secret):
            text = text.replace(spelling, ERASED)
    return text


def _scrub_call(call: dict[str, Any], secrets: Sequence[str]) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    return {**call, "function": {**function, "arguments": scrub(function["arguments"], secrets)}}


def _scrub_message(message: ChatMessage, secrets: Sequence[str]) -> ChatMessage:
    calls = tuple(_scrub_call(c, secrets) for c in message.tool_calls)
    content = None if message.content is None else scrub(message.content, secrets)
    return evolve(message, content=content, tool_calls=calls)


def forget(conversation: tuple[Turn, ...], secrets: Sequence[str]) -> tuple[Turn, ...]:
    """``conversation`` with every spelling of ``secrets`` replaced by :data:`ERASED`."""
    if not secrets:
        return conversation
    return tuple(
        evolve(turn, messages=tuple(_scrub_message(m, secrets) for m in turn.messages))
        for turn in conversation
    )


def scrub_run(run: RunState, secrets: Sequence[str]) -> RunState:
    if not secrets:
        return run
    return evolve(
        run,
        messages=tuple(_scrub_message(m, secrets) for m in run.messages),
        tool_results=tuple(_scrub_message(m, secrets) for m in run.tool_results),
        pending_tools=tuple(
            evolve(p, arguments_json=scrub(p.arguments_json, secrets)) for p in run.pending_tools
        ),
    )
