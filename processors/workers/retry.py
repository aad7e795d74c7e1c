"""Retry timing and classification shared by the tool and model workers.

Backoff is exponential with full jitter (a uniform draw between zero and the exponential cap):
many workers retrying the same failing dependency then spread out instead of hammering it in
lockstep.
"""

from __future__ import annotations

import random

from agentstream.processors.core.spec import RetryPolicy
from agentstream.processors.errors import WorkerError

#: Exceptions that say "try again later" whoever raised them; anything else is a bug or bad
#: input, which another attempt would only repeat.
_TRANSIENT: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)


def backoff_cap(policy: RetryPolicy, attempt: int) -> float:
    """The longest wait after failed attempt number ``attempt`` (1-based)."""
    if attempt < 1:
        raise ValueError("attempts are numbered from 1")
    exponent = min(attempt - 1, 64)  # keeps the power finite; max_backoff_s caps it anyway
    return float(min(policy.max_backoff_s, policy.initial_backoff_s * policy.multiplier**exponent))


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
