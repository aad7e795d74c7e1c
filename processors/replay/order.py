"""The order in which the processor applied an agent's inputs, recovered from the audit log.

The processor consumes four topics; within a topic partition it applies events in offset order,
but how it interleaved the topics is not recorded, and it matters: an input that arrives while
a run is active is queued, and the next run's call ids derive from whichever event started it.
Event time is not enough to tell. What is recorded is every output, with the id of the event that
caused it (``causation_id``), and outputs are deterministic. So the order is rebuilt greedily:
among the next event of each stream, take the first (by event time) that the state machine
applies cleanly and that emits exactly the outputs the log says it caused. If none does (its
outputs were never projected, or it was rejected), the earliest is taken, as the processor would
have applied it too. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agentstream.processors.core.machine import Applied, transition
from agentstream.processors.core.spec import AgentSpec, Catalog, SpecVersions
from agentstream.processors.core.state import AgentState
from agentstream.schemas.events import Event

__all__ = [
    "Queued",
    "processor_order",
]


@dataclass(frozen=True, order=True)
class Queued:
    """One input as read from the log; sorts by event time, its stream's rank breaking ties."""

    occurred_at: datetime
    rank: int
    event: Event = field(compare=False)


def processor_order(
    streams: Sequence[Sequence[Queued]],
    caused: Mapping[str, frozenset[str]],
    spec: AgentSpec | SpecVersions | Catalog,
) -> list[Event]:
    """Interleave ``streams`` (each in the order the processor consumes it) the way the
    processor did, given ``caused``: event id -> ids of the outputs the log records for it."""
    heads = [0] * len(streams)
    state: AgentState | None = None
    ordered: list[Event] = []
    while True:
        candidates = sorted(
            (streams[i][heads[i]], i) for i in range(len(streams)) if heads[i] < len(streams[i])
        )
        if not candidates:
            return ordered
        chosen, state = _choose(candidates, state, caused, spec)
        heads[chosen] += 1
        ordered.append(streams[chosen][heads[chosen] - 1].event)


def _choose(
    candidates: list[tuple[Queued, int]],
    state: AgentState | None,
    caused: Mapping[str, frozenset[str]],
    spec: AgentSpec | SpecVersions | Catalog,
) -> tuple[int, AgentState]:
    """The stream whose next event the processor applied next, and the state after it."""
    first: tuple[int, AgentState] | None = None
    for queued, index in candidates:
        event = queued.event
        decision = transition(state, event, spec)
        if first is None:
            first = (index, decision.state)
        emitted = frozenset(e.envelope.event_id for e in decision.emits)
        clean = isinstance(decision, Applied)
        if clean and emitted == caused.get(event.envelope.event_id, frozenset()):
            return index, decision.state
    assert first is not None  # candidates is never empty here
    return first
