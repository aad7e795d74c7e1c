"""The one attempt loop of the tool and model workers: breaker, attempt, classify, back off.

Backoff is exponential with full jitter (a uniform draw between zero and the exponential cap):
many workers retrying the same failing dependency then spread out instead of hammering it in
lockstep.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from agentstream.processors.core.spec import RetryPolicy
from agentstream.processors.errors import CircuitOpenError, WorkerError
from agentstream.processors.workers.breaker import CircuitBreaker
from agentstream.streams.runtime.backoff import capped_exponential

__all__ = [
    "Attempted",
    "attempt_with_retry",
    "backoff_cap",
    "backoff_delay",
    "error_class",
    "error_message",
    "is_retryable",
]

T = TypeVar("T")
Target = TypeVar("Target")

#: Exceptions that say "try again later" whoever raised them; anything else is a bug or bad
#: input, which another attempt would only repeat.
_TRANSIENT: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)


def backoff_cap(policy: RetryPolicy, attempt: int) -> float:
    """The longest wait after failed attempt number ``attempt`` (1-based)."""
    return capped_exponential(
        policy.initial_backoff_s, policy.max_backoff_s, attempt, policy.multiplier
    )


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt ``attempt`` before the next one (full jitter)."""
    draw = (rng or random).random()
    return draw * backoff_cap(policy, attempt)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, WorkerError):
        return exc.retryable
    if isinstance(exc, _TRANSIENT):
        return True
    return bool(getattr(exc, "retryable", False))


def error_class(exc: BaseException) -> str:
    return type(exc).__name__


def error_message(exc: BaseException, limit: int = 1000) -> str:
    text = str(exc) or type(exc).__name__
    # A lone surrogate (from JSON arguments like "\ud800") cannot be encoded as UTF-8, so it
    # would make the failed-result event itself unsendable; show it escaped instead.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Attempted(Generic[T, Target]):
    """How a call ended: its value, or the error it gave up on; the target it last tried."""

    target: Target
    attempts: int
    value: T | None = None
    error: BaseException | None = None


async def attempt_with_retry(
    call: Callable[[Target, int], Awaitable[T]],
    *,
    choose: Callable[[], Target | None],
    breaker: Callable[[Target], CircuitBreaker],
    policy: RetryPolicy,
    max_attempts: int,
    first: Target,
    rng: random.Random,
    closed: Callable[[], str],
    on_failure: Callable[[Target, int, BaseException], None],
) -> Attempted[T, Target]:
    """Call ``call(target, attempt)`` until it returns, fails for good, or ``max_attempts`` are
    spent. ``choose`` names the target whose breaker lets a call through (None when every one is
    open: the call ends with :class:`CircuitOpenError`, worded by ``closed``); each failure is
    reported to ``on_failure`` and counted by the target's breaker; a cancelled attempt gives
    its breaker slot back."""
    attempts = 0
    last: BaseException | None = None
    tried = first
    while attempts < max_attempts:
        target = choose()
        if target is None:
            suffix = f"; last error: {error_class(last)}: {last}" if last else ""
            last = CircuitOpenError(closed() + suffix)
            break
        tried = target
        attempts += 1
        guard = breaker(target)
        try:
            value = await call(target, attempts)
        except asyncio.CancelledError:
            guard.release()
            raise
        except Exception as exc:
            guard.record_failure()
            last = exc
            on_failure(target, attempts, exc)
            if not is_retryable(exc) or attempts >= max_attempts:
                break
            await asyncio.sleep(backoff_delay(policy, attempts, rng))
            continue
        guard.record_success()
        return Attempted(tried, attempts, value=value)
    return Attempted(tried, attempts, error=last)
