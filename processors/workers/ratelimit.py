"""A token bucket per model provider: calls wait for a token instead of tripping the
provider's own rate limit (whose 429s would also count against the breaker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = [
    "TokenBucket",
]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``acquire`` waits for one."""

    def __init__(
        self, rate: float, burst: int = 1, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()
        self._lock = asyncio.Lock()

    def try_acquire(self) -> float:
        """Take a token if there is one and return 0, else return the seconds to wait."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    async def acquire(self) -> None:
        # The lock keeps waiters in arrival order, so one busy agent cannot starve the rest.
        async with self._lock:
            while (wait := self.try_acquire()) > 0:
                await asyncio.sleep(wait)
