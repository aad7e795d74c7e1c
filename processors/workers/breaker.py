"""Circuit breakers: stop calling a dependency that keeps failing, and probe it again later.

Closed: calls go through; ``failure_threshold`` consecutive failures open the breaker.
Open: calls fail fast until ``cooldown_s`` has passed, then the breaker is half open.
Half open: ``half_open_probes`` calls may go through; a success closes the breaker, a failure
opens it again for another cool-down. Failing fast keeps a dead tool from holding every worker
slot for its whole timeout, and leaves the agent's own logic to decide what a failure means.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from agentstream.streams.runtime.logs import get_logger

__all__ = [
    "BreakerPolicy",
    "BreakerRegistry",
    "BreakerState",
    "CircuitBreaker",
    "StateListener",
]

log = get_logger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int = 5
    cooldown_s: float = 30.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.half_open_probes < 1 or self.cooldown_s < 0:
            raise ValueError(f"invalid breaker policy {self}")


StateListener = Callable[["CircuitBreaker", BreakerState, BreakerState], None]


class CircuitBreaker:
    """One breaker; not thread-safe (each worker drives its breakers from one event loop)."""

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: StateListener | None = None,
    ) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0

    @property
    def state(self) -> BreakerState:
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self.policy.cooldown_s
        ):
            self._move(BreakerState.HALF_OPEN)
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.policy.cooldown_s - self._clock())

    def allow(self) -> bool:
        """Whether a call may go through now; a True in half-open state takes a probe slot,
        which the caller gives back through record_success, record_failure or release."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._probes < self.policy.half_open_probes:
            self._probes += 1
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)
            self._open()
        elif self._state is BreakerState.CLOSED and self._failures >= self.policy.failure_threshold:
            self._open()

    def release(self) -> None:
        """Give back a probe slot whose call ended without telling anything (cancelled)."""
        if self._state is BreakerState.HALF_OPEN:
            self._probes = max(0, self._probes - 1)

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._move(BreakerState.OPEN)

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if new is not BreakerState.HALF_OPEN:
            self._probes = 0
        if old is not new and self._on_change is not None:
            self._on_change(self, old, new)


@dataclass
class BreakerRegistry:
    """One breaker per name (a tool, a model provider), created on first use; every state
    change is logged and counted."""

    kind: str
    default: BreakerPolicy = field(default_factory=BreakerPolicy)
    overrides: dict[str, BreakerPolicy] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _breakers: dict[str, CircuitBreaker] = field(default_factory=dict)

    def get(self, name: str) -> CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            policy = self.overrides.get(name, self.default)
            breaker = CircuitBreaker(name, policy, clock=self.clock, on_change=self._changed)
            self._breakers[name] = breaker
        return breaker

    def states(self) -> dict[str, str]:
        return {name: str(b.state) for name, b in sorted(self._breakers.items())}

    def _changed(self, breaker: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
        self.transitions[(breaker.name, str(old), str(new))] += 1
        count = self.transitions[(breaker.name, str(old), str(new))]
        level = log.warning if new is BreakerState.OPEN else log.info
        level(
            "breaker_state_changed",
            kind=self.kind,
            breaker=breaker.name,
            old=str(old),
            new=str(new),
            consecutive_failures=breaker.consecutive_failures,
            times=count,
        )
