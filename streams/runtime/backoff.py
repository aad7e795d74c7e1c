"""The one backoff schedule: exponential, capped, with jitter. Services use :class:`Backoff` to
wait out a broker or database that is away; the workers' retry policies use the same curve."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

__all__ = ["Backoff", "capped_exponential"]


def capped_exponential(
    initial: float, maximum: float, attempt: int, multiplier: float = 2.0
) -> float:
    """``initial``, then ``multiplier`` times more after each failed attempt (numbered from 1),
    never above ``maximum``."""
    if attempt < 1:
        raise ValueError("attempts are numbered from 1")
    exponent = min(attempt - 1, 64)  # keeps the power finite; the cap applies anyway
    return float(min(maximum, initial * multiplier**exponent))


@dataclass
class Backoff:
    """Delays for a failing dependency: about ``initial``, 2x, 4x ... up to ``maximum``
    seconds, each shortened at random by up to a quarter, so that many clients spread out."""

    initial: float = 0.5
    maximum: float = 10.0
    attempts: int = 0
    failing_since: float | None = None

    def next_delay(self) -> float:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.attempts += 1
        return capped_exponential(self.initial, self.maximum, self.attempts) * random.uniform(
            0.75, 1.0
        )

    def reset(self) -> float | None:
        """Forget the failures; returns for how long it was failing, if it was."""
        since, self.failing_since, self.attempts = self.failing_since, None, 0
        return None if since is None else time.monotonic() - since
