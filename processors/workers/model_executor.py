"""Runs one model call to its end: per-provider rate limit and circuit breaker, timeout,
retries with backoff and jitter, and the agent's fallback model when the primary provider's
breaker is open. A provider's failure is a ModelCallFailed event, never a crash."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Mapping

from agentstream.processors.core.spec import RetryPolicy
from agentstream.processors.errors import CallTimeoutError, CircuitOpenError, ProviderError
from agentstream.processors.workers.breaker import BreakerRegistry
from agentstream.processors.workers.model_adapters import ModelAdapter, ModelRequest, ModelResponse
from agentstream.processors.workers.ratelimit import TokenBucket
from agentstream.processors.workers.results import result_envelope
from agentstream.processors.workers.retry import (
    attempt_with_retry,
    error_class,
    error_message,
    is_retryable,
)
from agentstream.schemas.events import ModelCallCompleted, ModelCallFailed, ModelCallRequested
from agentstream.schemas.limits import MAX_RESULT_BYTES, utf8_size
from agentstream.streams.runtime.logs import get_logger

__all__ = [
    "RESULT_PURPOSE",
    "SOURCE",
    "ModelExecutor",
    "ModelResult",
]

log = get_logger(__name__)

ModelResult = ModelCallCompleted | ModelCallFailed
SOURCE = "model-worker"
RESULT_PURPOSE = "model-result"


@dataclasses.dataclass(frozen=True)
class _Target:
    provider: str
    model: str
    fallback: bool


class ModelExecutor:
    def __init__(
        self,
        adapters: Mapping[str, ModelAdapter],
        breakers: BreakerRegistry,
        *,
        limits: Mapping[str, TokenBucket] | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 120.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.adapters = dict(adapters)
        self.breakers = breakers
        self.limits = dict(limits or {})
        self.retry = retry or RetryPolicy()
        self.timeout_s = timeout_s
        self._rng = rng or random.Random()
        self._clock = clock

    async def aclose(self) -> None:
        for adapter in self.adapters.values():
            await adapter.aclose()

    async def execute(self, event: ModelCallRequested) -> ModelResult:
        started = self._clock()
        targets = [_Target(event.provider, event.model, False)]
        if event.fallback_provider:
            targets.append(
                _Target(event.fallback_provider, event.fallback_model or event.model, True)
            )
        try:
            request = ModelRequest.from_event(event)
        except ProviderError as exc:
            return self._failed(event, targets[0], 0, exc, started)
        unknown = [t.provider for t in targets if t.provider not in self.adapters]
        targets = [t for t in targets if t.provider in self.adapters]
        if not targets:
            missing = ProviderError(f"no provider configured named {unknown}", retryable=False)
            return self._failed(
                event, _Target(event.provider, event.model, False), 0, missing, started
            )

        def failed(target: _Target, attempt: int, exc: BaseException) -> None:
            log.info(
                "model_attempt_failed",
                provider=target.provider,
                model=target.model,
                call_id=event.call_id,
                attempt=attempt,
                error_class=error_class(exc),
                retryable=is_retryable(exc),
            )

        every = "every provider" if len(targets) > 1 else "provider"
        ended = await attempt_with_retry(
            lambda target, _attempt: self._attempt(target, request),
            choose=lambda: self._choose(targets),
            breaker=lambda target: self.breakers.get(target.provider),
            policy=self.retry,
            max_attempts=self.retry.max_attempts,
            first=targets[0],
            rng=self._rng,
            closed=lambda: (
                f"the circuit breaker of {every} {', '.join(t.provider for t in targets)} is open"
            ),
            on_failure=failed,
        )
        if ended.error is not None:
            return self._failed(event, ended.target, ended.attempts, ended.error, started)
        assert ended.value is not None  # returned without an error: the adapter's response
        return self._completed(event, ended.target, ended.value, ended.attempts, started)

    def _choose(self, targets: list[_Target]) -> _Target | None:
        """The primary while its breaker lets calls through, else the fallback."""
        for target in targets:
            if self.breakers.get(target.provider).allow():
                return target
        return None

    async def _attempt(self, target: _Target, request: ModelRequest) -> ModelResponse:
        limit = self.limits.get(target.provider)
        if limit is not None:
            await limit.acquire()
        adapter = self.adapters[target.provider]
        try:
            return await asyncio.wait_for(
                adapter.complete(dataclasses.replace(request, model=target.model)), self.timeout_s
            )
        except TimeoutError as exc:
            raise CallTimeoutError(
                f"{target.provider} took longer than {self.timeout_s:g}s"
            ) from exc

    def _completed(
        self,
        event: ModelCallRequested,
        target: _Target,
        response: ModelResponse,
        attempts: int,
        started: float,
    ) -> ModelResult:
        size = utf8_size(response.content or "") + sum(
            utf8_size(call.arguments_json) for call in response.tool_calls
        )
        if size > MAX_RESULT_BYTES:
            too_big = ProviderError(
                f"the answer is {size:,} bytes, over the {MAX_RESULT_BYTES:,}-byte limit of a "
                "model result",
                retryable=False,
            )
            return self._failed(event, target, attempts, too_big, started)
        return ModelCallCompleted(
            envelope=result_envelope(
                event, call_id=event.call_id, purpose=RESULT_PURPOSE, source=SOURCE
            ),
            call_id=event.call_id,
            content=response.content,
            tool_calls=response.tool_calls,
            usage=response.usage,
            provider=target.provider,
            model=target.model,
            attempts=attempts,
            latency_ms=self._elapsed_ms(started),
            fallback_used=target.fallback,
        )

    def _failed(
        self,
        event: ModelCallRequested,
        target: _Target,
        attempts: int,
        exc: BaseException,
        started: float,
    ) -> ModelResult:
        return ModelCallFailed(
            envelope=result_envelope(
                event, call_id=event.call_id, purpose=RESULT_PURPOSE, source=SOURCE
            ),
            call_id=event.call_id,
            provider=target.provider,
            model=target.model,
            attempts=attempts,
            error_class=error_class(exc),
            error_message=error_message(exc),
            retryable=is_retryable(exc) or isinstance(exc, CircuitOpenError),
        )

    def _elapsed_ms(self, started: float) -> int:
        return max(0, int((self._clock() - started) * 1000))
