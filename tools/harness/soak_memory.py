"""Memory of the services over a soak run, and whether it stayed flat.

Flat means: over the second half of the run (after start-up, caches and batches have warmed
up), the least-squares slope of each service's RSS, extrapolated over that half, grows the
process by less than ``tolerance`` of its size (and by less than a few MB for small ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psutil

MB = 1024 * 1024


def rss_mb(pid: int) -> float | None:
    """Resident memory of the process and its children, in MB; None if it is gone."""
    try:
        process = psutil.Process(pid)
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
    except psutil.NoSuchProcess:
        return None
    return total / MB


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two distinct x)."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


@dataclass(frozen=True)
class MemoryVerdict:
    service: str
    first_mb: float
    last_mb: float
    peak_mb: float
    #: MB per minute over the second half
    slope_mb_per_min: float
    #: what that slope adds over the second half, in MB
    growth_mb: float
    flat: bool


def verdict(
    service: str,
    samples: Sequence[tuple[float, float]],
    *,
    tolerance: float = 0.05,
    floor_mb: float = 3.0,
) -> MemoryVerdict:
    """``samples`` are (seconds since start, RSS MB)."""
    if not samples:
        return MemoryVerdict(service, 0.0, 0.0, 0.0, 0.0, 0.0, False)
    half = samples[len(samples) // 2 :]
    per_second = slope(half)
    span = half[-1][0] - half[0][0]
    growth = per_second * span
    size = sum(mb for _, mb in half) / len(half)
    return MemoryVerdict(
        service,
        samples[0][1],
        samples[-1][1],
        max(mb for _, mb in samples),
        per_second * 60,
        growth,
        growth < max(floor_mb, tolerance * size),
    )
