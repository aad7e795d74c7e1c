"""The plan of one peer's measurement (fixed loads, then stepping the load) and the search for
the highest offered load whose p99 stays under the bound."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentstream.tools.harness.peers.load import Level


@dataclass(frozen=True)
class Plan:
    #: offered loads reported for every peer, runs/s
    loads: tuple[float, ...] = (20.0, 50.0, 100.0, 200.0)
    #: how long each load is offered
    seconds: float = 10.0
    #: how long the results of a load's last runs are awaited before they count as unfinished
    drain_seconds: float = 10.0
    #: unmeasured runs after each start, so connections, caches and pools are warm
    warmup_seconds: float = 2.0
    p99_bound_ms: float = 250.0
    #: step the load past the fixed ones to find the highest that keeps p99 under the bound
    find_max: bool = True
    min_load: float = 1.0
    max_load: float = 3200.0
    #: halvings of the interval between the highest passing and lowest failing load
    refine_steps: int = 2

    def as_json(self) -> dict[str, object]:
        return {
            "loads_per_s": list(self.loads),
            "seconds": self.seconds,
            "drain_seconds": self.drain_seconds,
            "warmup_seconds": self.warmup_seconds,
            "p99_bound_ms": self.p99_bound_ms,
            "find_max": self.find_max,
            "min_load_per_s": self.min_load,
            "max_load_per_s": self.max_load,
            "refine_steps": self.refine_steps,
        }


Measure = Callable[[float], Awaitable[Level]]


def _bracket(levels: dict[float, Level], bound_ms: float) -> tuple[float | None, float | None]:
    """The highest passing load and the lowest failing load above it."""
    passing = [rate for rate, level in levels.items() if level.under(bound_ms)]
    best = max(passing, default=None)
    failing = [
        rate
        for rate, level in levels.items()
        if not level.under(bound_ms) and (best is None or rate > best)
    ]
    return best, min(failing, default=None)


async def highest_under_bound(
    plan: Plan, levels: dict[float, Level], measure: Measure
) -> float | None:
    """Step the load from what ``levels`` already shows: double past the highest passing load,
    halve below the lowest failing one, then split the bracket ``refine_steps`` times. Every
    level measured is added to ``levels``. None when even ``min_load`` misses the bound."""
    refined = 0
    while True:
        best, worst = _bracket(levels, plan.p99_bound_ms)
        if best is None:
            step = round(min(levels) / 2) if levels else round(plan.min_load)
            if step < plan.min_load:
                return None
        elif worst is None:
            if best >= plan.max_load:
                return best
            step = round(min(best * 2, plan.max_load))
        else:
            step = round((best + worst) / 2)
            if refined >= plan.refine_steps or step in (best, worst):
                return best
            refined += 1
        if step in levels:
            return best
        levels[step] = await measure(step)
