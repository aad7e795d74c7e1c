"""Durable timers as events: the :class:`TimerFired` that ends a :class:`TimerSet`.

The timer worker sends it at ``fire_at``, stamped with ``fire_at`` itself and with an id
derived from the timer, so every emission of one timer (a worker restarted, two workers during
a rebalance) is the same event, which the processor keeps once.
"""

from __future__ import annotations

from agentstream.processors.core.ids import derived_id
from agentstream.schemas.events import TimerFired, TimerSet

__all__ = [
    "TIMER_SOURCE",
    "fire",
    "fired_event_id",
]

TIMER_SOURCE = "timer"


def fired_event_id(timer_id: str) -> str:
    return derived_id(timer_id, "fired")


def fire(timer: TimerSet) -> TimerFired:
    """The event that fires ``timer``."""
    return TimerFired(
        envelope=timer.envelope.caused(
            event_id=fired_event_id(timer.timer_id), occurred_at=timer.fire_at, source=TIMER_SOURCE
        ),
        timer_id=timer.timer_id,
        call_id=timer.call_id,
        purpose=timer.purpose,
    )
