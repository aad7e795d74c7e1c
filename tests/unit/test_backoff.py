"""Retry timing (exponential backoff with full jitter) and which errors are retried."""

from __future__ import annotations

import random

import pytest

from agentstream.processors.core.spec import RetryPolicy
from agentstream.processors.errors import (
    CallTimeoutError,
    CircuitOpenError,
    ProviderError,
    RetryableError,
)
from agentstream.processors.workers.retry import (
    backoff_cap,
    backoff_delay,
    error_message,
    is_retryable,
)

POLICY = RetryPolicy(max_attempts=10, initial_backoff_s=0.1, max_backoff_s=2.0, multiplier=2.0)


def test_the_cap_grows_exponentially_up_to_the_maximum() -> None:
    caps = [backoff_cap(POLICY, attempt) for attempt in range(1, 8)]
    assert caps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert backoff_cap(POLICY, 10_000) == 2.0


def test_delays_are_jittered_between_zero_and_the_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(POLICY, 4, rng) for _ in range(2000)]
    assert all(0 <= d <= 0.8 for d in delays)
    assert min(delays) < 0.05 and max(delays) > 0.75, "full jitter spreads over the range"
    assert len(set(delays)) > 1900


def test_delays_are_reproducible_with_a_seed() -> None:
    first = [backoff_delay(POLICY, n, random.Random(7)) for n in range(1, 5)]
    again = [backoff_delay(POLICY, n, random.Random(7)) for n in range(1, 5)]
    assert first == again


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError):
        backoff_cap(POLICY, 0)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ConnectionError("reset"), True),
        (TimeoutError(), True),
        (CallTimeoutError("slow"), True),
        (RetryableError("busy"), True),
        (ProviderError("503", retryable=True), True),
        (ProviderError("400", retryable=False), False),
        (CircuitOpenError("open"), False),
        (ValueError("bad input"), False),
        (KeyError("x"), False),
    ],
)
def test_which_errors_are_retried(error: Exception, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_error_messages_are_bounded() -> None:
    assert len(error_message(ValueError("x" * 5000), limit=100)) == 100
    assert error_message(ValueError()) == "ValueError"
