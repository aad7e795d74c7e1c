"""The agent run every system executes: a model step, a tool step and a second model step.

The stand-ins are the same code with the same cost everywhere: a fixed number of hash rounds
(a scripted model and an instant tool cost about this much in agentstream's own bench) and
payloads of a few hundred bytes, so each system persists records of a realistic size.
"""

from __future__ import annotations

import hashlib
from typing import Any

#: Hash rounds per step: fixed work, not a timed spin, so a slower system pays no extra.
ROUNDS = 100
_FILLER = ("Customer asked where the parcel is; the carrier scan shows it left the depot. " * 5)[
    :400
]


def _work(seed: str) -> str:
    digest = seed.encode()
    for _ in range(ROUNDS):
        digest = hashlib.sha256(digest + b"agent-step").digest()
    return digest.hex()[:16]


def model_step(run_id: str, turn: int, observation: dict[str, Any] | None) -> dict[str, Any]:
    """Turn 1 asks for a tool; turn 2 answers from the tool's result."""
    token = _work(f"{run_id}:model:{turn}")
    if observation is None:
        call = {"name": "lookup_order", "arguments": {"order_id": run_id}}
        return {"turn": turn, "tool_call": call, "token": token, "text": _FILLER}
    answer = f"Order {observation['order_id']} is {observation['status']}."
    return {"turn": turn, "answer": answer, "token": token, "text": _FILLER}


def tool_step(run_id: str, call: dict[str, Any]) -> dict[str, Any]:
    token = _work(f"{run_id}:tool:{call['name']}")
    order_id = call["arguments"]["order_id"]
    return {"order_id": order_id, "status": "shipped", "token": token, "detail": _FILLER}


async def model_call(run_id: str, turn: int, observation: dict[str, Any] | None) -> dict[str, Any]:
    """``model_step`` as a coroutine: every peer runs its steps on its event loop, none in a
    thread pool of its own choosing, so all pay the same for them."""
    return model_step(run_id, turn, observation)


async def tool_call(run_id: str, call: dict[str, Any]) -> dict[str, Any]:
    return tool_step(run_id, call)


def run_inline(run_id: str) -> dict[str, Any]:
    """The run without any durability: the floor every system's cost is measured against."""
    first = model_step(run_id, 1, None)
    result = tool_step(run_id, first["tool_call"])
    return model_step(run_id, 2, result)


def expected_answer(run_id: str) -> str:
    return f"Order {run_id} is shipped."


def answer_of(result: Any) -> str | None:
    """The answer in a run's result, whichever way the peer returned the final step."""
    if isinstance(result, dict):
        answer = result.get("answer")
        if isinstance(answer, str):
            return answer
        final = result.get("final")
        if isinstance(final, dict):
            return answer_of(final)
    return None
