"""Causal order for showing events: within the same moment, a cause before its effects.

Event times have millisecond resolution and an effect is stamped with its cause's time, so a
sort by time alone (then by topic) can show a model call above the tool result that caused it."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["causal_order"]

T = TypeVar("T")


def causal_order(
    items: Sequence[T], *, event_id: Callable[[T], str], cause: Callable[[T], str | None]
) -> list[T]:
    """``items``, given in time order, with every event after the one that caused it when both
    are present; otherwise in the given order (a stable topological sort)."""
    index = {event_id(item): n for n, item in enumerate(items)}
    waiting: dict[int, list[int]] = {}
    ready: list[int] = []
    for n, item in enumerate(items):
        parent = index.get(cause(item) or "")
        if parent is None or parent == n:
            ready.append(n)
        else:
            waiting.setdefault(parent, []).append(n)
    heapq.heapify(ready)
    ordered: list[T] = []
    while ready:
        n = heapq.heappop(ready)
        ordered.append(items[n])
        for child in waiting.pop(n, ()):
            heapq.heappush(ready, child)
    # A cycle of causes cannot come from the processor; keep such events rather than drop them.
    ordered += [items[n] for children in waiting.values() for n in children]
    return ordered
