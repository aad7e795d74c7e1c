"""The model executor without I/O: failures become events, and the fallback takes over when
the primary provider's breaker is open."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from builders import envelope

from agentstream.processors.core.spec import RetryPolicy
from agentstream.processors.errors import ProviderError
from agentstream.processors.workers.breaker import BreakerPolicy, BreakerRegistry
from agentstream.processors.workers.model_adapters import ModelRequest, ModelResponse
from agentstream.processors.workers.model_executor import ModelExecutor
from agentstream.processors.workers.model_scripted import ScriptedModel
from agentstream.processors.workers.ratelimit import TokenBucket
from agentstream.schemas.events import ModelCallCompleted, ModelCallFailed, ModelCallRequested

FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)


class Broken:
    def __init__(self, retryable: bool = True) -> None:
        self.calls = 0
        self.retryable = retryable

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.calls += 1
        raise ProviderError("HTTP 503: overloaded", retryable=self.retryable, status=503)

    async def aclose(self) -> None:
        return None


def call(call_id: str = "m-1", *, fallback: bool = True) -> ModelCallRequested:
    return ModelCallRequested(
        envelope=envelope(run_id="run-1"),
        call_id=call_id,
        step=1,
        provider="primary",
        model="big",
        messages_json=json.dumps([{"role": "user", "content": "hello"}]),
        fallback_provider="scripted" if fallback else None,
        fallback_model="support-script" if fallback else None,
    )


def executor(primary: Any, threshold: int = 2) -> ModelExecutor:
    breakers = BreakerRegistry("model", BreakerPolicy(failure_threshold=threshold, cooldown_s=60))
    return ModelExecutor({"primary": primary, "scripted": ScriptedModel()}, breakers, retry=FAST)


def test_a_failing_provider_without_fallback_is_a_failed_result() -> None:
    primary = Broken()
    result = asyncio.run(executor(primary, threshold=10).execute(call(fallback=False)))
    assert isinstance(result, ModelCallFailed)
    assert (result.attempts, result.error_class, result.retryable) == (3, "ProviderError", True)
    assert result.provider == "primary" and "503" in result.error_message
    assert primary.calls == 3


def test_the_fallback_answers_once_the_primary_breaker_opens() -> None:
    primary = Broken()
    ex = executor(primary, threshold=2)
    result = asyncio.run(ex.execute(call()))
    assert isinstance(result, ModelCallCompleted)
    assert result.fallback_used is True
    assert (result.provider, result.model, result.attempts) == ("scripted", "support-script", 3)
    # later calls go straight to the fallback while the primary's breaker is open
    later = asyncio.run(ex.execute(call("m-2")))
    assert isinstance(later, ModelCallCompleted) and later.fallback_used and later.attempts == 1
    assert primary.calls == 2


def test_a_healthy_primary_is_not_a_fallback() -> None:
    breakers = BreakerRegistry("model")
    ex = ModelExecutor({"primary": ScriptedModel()}, breakers)
    request = call().model_copy(update={"model": "support-script"})
    result = asyncio.run(ex.execute(request))
    assert isinstance(result, ModelCallCompleted) and not result.fallback_used


def test_a_non_retryable_error_fails_at_once() -> None:
    primary = Broken(retryable=False)
    result = asyncio.run(executor(primary, threshold=10).execute(call(fallback=False)))
    assert isinstance(result, ModelCallFailed) and result.attempts == 1 and not result.retryable


def test_an_unconfigured_provider_is_a_failed_result() -> None:
    ex = ModelExecutor({}, BreakerRegistry("model"))
    result = asyncio.run(ex.execute(call(fallback=False)))
    assert isinstance(result, ModelCallFailed) and result.attempts == 0


def test_the_token_bucket_spaces_calls() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=2, clock=lambda: now[0])
    assert bucket.try_acquire() == 0 and bucket.try_acquire() == 0
    assert abs(bucket.try_acquire() - 0.1) < 1e-9
    now[0] += 0.1
    assert bucket.try_acquire() == 0


def test_acquire_waits_for_a_token() -> None:
    async def scenario() -> float:
        bucket = TokenBucket(rate=50, burst=1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(4):
            await bucket.acquire()
        return loop.time() - started

    assert asyncio.run(scenario()) >= 0.05
