"""The tool executor without a broker: retries, timeouts, the breaker, idempotency keys."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

from builders import envelope

from agentstream.processors.core.ids import arguments_hash
from agentstream.processors.core.spec import RetryPolicy, ToolSpec, tool
from agentstream.processors.errors import RetryableError
from agentstream.processors.workers.breaker import BreakerPolicy, BreakerRegistry
from agentstream.processors.workers.tool_executor import ToolExecutor
from agentstream.processors.workers.toolcontext import current_call, idempotency_key
from agentstream.schemas.events import ToolCallCompleted, ToolCallFailed, ToolCallRequested

FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.005)
seen_keys: list[tuple[str, int]] = []
runs: Counter[str] = Counter()


@tool(retry=FAST)
def twice_broken(x: int) -> dict[str, int]:
    """Fails twice per call, then works."""
    seen_keys.append((idempotency_key(), current_call().attempt))
    runs[idempotency_key()] += 1
    if runs[idempotency_key()] <= 2:
        raise ConnectionError("reset")
    return {"x": x}


@tool(retry=FAST)
def down(x: int) -> None:
    """Always down."""
    raise RetryableError("backend down")


@tool(retry=FAST)
def rejects(x: int) -> None:
    """A bad-input error: no retry."""
    raise ValueError(f"no such x {x}")


@tool(retry=FAST, timeout_s=0.05)
def sleepy(x: int) -> int:
    """Too slow."""
    time.sleep(0.3)
    return x


@tool(retry=FAST)
async def coroutine_tool(x: int) -> dict[str, Any]:
    """Async tools run on the loop."""
    await asyncio.sleep(0)
    return {"x": x, "key": idempotency_key()}


counted: Counter[str] = Counter()


@tool(retry=FAST)
def counted_tool(x: int) -> int:
    """Counts its runs."""
    counted[idempotency_key()] += 1
    return x


TOOLS: tuple[ToolSpec, ...] = (twice_broken, down, rejects, sleepy, coroutine_tool, counted_tool)


def executor(threshold: int = 50, cooldown: float = 60.0) -> ToolExecutor:
    breakers = BreakerRegistry(
        "tool", BreakerPolicy(failure_threshold=threshold, cooldown_s=cooldown)
    )
    return ToolExecutor({t.name: t for t in TOOLS}, breakers)


def request(
    tool_name: str, call_id: str, arguments: dict[str, Any] | None = None
) -> ToolCallRequested:
    args = json.dumps(arguments or {"x": 1})
    spec = next(t for t in TOOLS if t.name == tool_name)
    return ToolCallRequested(
        envelope=envelope(run_id="run-1"),
        call_id=call_id,
        tool=tool_name,
        arguments_json=args,
        arguments_hash=arguments_hash(args),
        timeout_ms=int(spec.timeout_s * 1000),
        max_attempts=spec.retry.max_attempts,
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_tool_failing_twice_completes_on_the_third_attempt_with_one_key() -> None:
    result = run(executor().execute(request("twice_broken", "call-1")))
    assert isinstance(result, ToolCallCompleted)
    assert result.attempts == 3
    assert json.loads(result.result_json) == {"x": 1}
    assert [k for k, _ in seen_keys if k == "call-1"] == ["call-1"] * 3
    assert [a for k, a in seen_keys if k == "call-1"] == [1, 2, 3]


def test_result_ids_are_derived_from_the_call() -> None:
    first = run(executor().execute(request("counted_tool", "call-ids")))
    second = run(executor().execute(request("counted_tool", "call-ids")))
    assert first.envelope.event_id == second.envelope.event_id
    assert first.envelope.causation_id is not None


def test_a_tool_that_always_fails_reports_every_attempt() -> None:
    result = run(executor().execute(request("down", "call-2")))
    assert isinstance(result, ToolCallFailed)
    assert (result.attempts, result.error_class) == (3, "RetryableError")
    assert "backend down" in result.error_message


def test_a_non_retryable_error_is_not_retried() -> None:
    result = run(executor().execute(request("rejects", "call-3", {"x": 9})))
    assert isinstance(result, ToolCallFailed)
    assert (result.attempts, result.error_class) == (1, "ValueError")


def test_a_slow_attempt_times_out_and_is_retried() -> None:
    result = run(executor().execute(request("sleepy", "call-4")))
    assert isinstance(result, ToolCallFailed)
    assert (result.attempts, result.error_class) == (3, "CallTimeoutError")


def test_the_breaker_opens_and_later_calls_fail_fast() -> None:
    ex = executor(threshold=3, cooldown=60)

    async def scenario() -> tuple[Any, Any, Any]:
        first = await ex.execute(request("down", "call-5"))
        started = time.monotonic()
        second = await ex.execute(request("down", "call-6"))
        other = await ex.execute(request("counted_tool", "call-7"))
        assert time.monotonic() - started < 0.05, "an open breaker fails at once"
        return first, second, other

    first, second, other = run(scenario())
    assert first.attempts == 3
    assert isinstance(second, ToolCallFailed)
    assert (second.attempts, second.error_class) == (0, "CircuitOpenError")
    assert isinstance(other, ToolCallCompleted), "breakers are per tool"
    assert ex.breakers.transitions[("down", "closed", "open")] == 1


def test_async_tools_get_the_idempotency_key_too() -> None:
    result = run(executor().execute(request("coroutine_tool", "call-8")))
    assert isinstance(result, ToolCallCompleted)
    assert json.loads(result.result_json) == {"x": 1, "key": "call-8"}


def test_a_request_seen_again_reuses_the_result_without_running_twice() -> None:
    ex = executor()

    async def scenario() -> list[Any]:
        req = request("counted_tool", "call-9")
        together = await asyncio.gather(ex.execute(req), ex.execute(req))
        return [*together, await ex.execute(req)]

    results = run(scenario())
    assert counted["call-9"] == 1
    assert len({r.model_dump_json() for r in results}) == 1
    assert ex.reused == 2


def test_unusable_requests_fail_without_an_attempt() -> None:
    ex = executor()
    unknown = request("counted_tool", "call-10").model_copy(update={"tool": "nope"})
    tampered = request("counted_tool", "call-11").model_copy(
        update={"arguments_json": json.dumps({"x": 2})}
    )
    for bad in (unknown, tampered):
        result = run(ex.execute(bad))
        assert isinstance(result, ToolCallFailed) and result.attempts == 0
    assert counted["call-11"] == 0
