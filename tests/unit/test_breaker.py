"""The circuit breaker's states, driven by a fake clock."""

from __future__ import annotations

from agentstream.processors.workers.breaker import (
    BreakerPolicy,
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(threshold: int = 3, cooldown: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    policy = BreakerPolicy(failure_threshold=threshold, cooldown_s=cooldown)
    return CircuitBreaker("tool", policy, clock=clock), clock


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    b, _ = breaker(threshold=3)
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert not b.allow()


def test_a_success_resets_the_count() -> None:
    b, _ = breaker(threshold=3)
    b.record_failure()
    b.record_failure()
    b.record_success()
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED


def test_half_open_after_the_cooldown_lets_one_probe_through() -> None:
    b, clock = breaker(threshold=1, cooldown=10)
    b.record_failure()
    clock.now += 9.9
    assert not b.allow()
    assert 0 < b.retry_after() <= 0.1 + 1e-9
    clock.now += 0.1
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow(), "the probe"
    assert not b.allow(), "only one probe at a time"
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.allow() and b.allow()


def test_a_failed_probe_opens_again_for_a_new_cooldown() -> None:
    b, clock = breaker(threshold=2, cooldown=5)
    b.record_failure()
    b.record_failure()
    clock.now += 5
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    clock.now += 4.9
    assert not b.allow()
    clock.now += 0.1
    assert b.allow()


def test_a_released_probe_frees_its_slot() -> None:
    b, clock = breaker(threshold=1, cooldown=1)
    b.record_failure()
    clock.now += 1
    assert b.allow()
    b.release()
    assert b.allow()


def test_registry_keeps_one_breaker_per_name_and_counts_every_change() -> None:
    clock = Clock()
    registry = BreakerRegistry(
        "tool",
        BreakerPolicy(failure_threshold=1, cooldown_s=1),
        overrides={"slow": BreakerPolicy(failure_threshold=5)},
        clock=clock,
    )
    assert registry.get("a") is registry.get("a")
    assert registry.get("slow").policy.failure_threshold == 5
    a = registry.get("a")
    a.record_failure()
    clock.now += 1
    assert a.allow()
    a.record_success()
    assert registry.transitions == {
        ("a", "closed", "open"): 1,
        ("a", "open", "half_open"): 1,
        ("a", "half_open", "closed"): 1,
    }
    assert registry.states() == {"a": "closed", "slow": "closed"}
