"""Re-fold one agent's recorded inputs through the current state machine, in memory, and compare
what it emits with what the processor recorded. Pure: nothing is produced or written.

Emitted ids derive from the causing event, so a changed spec still emits events with the ids
of the recorded ones; they are matched by id and compared field by field.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal

from agentstream.processors.core.machine import Decision, Duplicate, Rejected, transition
from agentstream.processors.core.spec import Catalog, SpecVersions
from agentstream.processors.core.state import AgentState
from agentstream.processors.replay.history import AgentHistory, Served
from agentstream.schemas.events import (
    Event,
    ModelCallRequested,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunHandedOff,
)

__all__ = [
    "AgentReplay",
    "Change",
    "OutputDiff",
    "StepDiff",
    "Verdict",
    "as_json",
    "compare",
    "diff_outputs",
    "plain",
    "replay_agent",
    "replay_inputs",
]

Verdict = Literal["same", "changed", "missing", "new"]


@dataclass(frozen=True)
class Change:
    path: str
    recorded: Any
    replayed: Any


@dataclass(frozen=True)
class OutputDiff:
    verdict: Verdict
    event_id: str
    type: str
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True)
class StepDiff:
    """One applied input and how its outputs compare."""

    index: int
    cause: Event
    outputs: tuple[OutputDiff, ...]
    rejection: str | None = None
    duplicate: bool = False
    #: recorded, but not sent in this replay (an answer a child no longer sends): not applied
    withheld: bool = False

    @property
    def identical(self) -> bool:
        return all(o.verdict == "same" for o in self.outputs)


@dataclass
class AgentReplay:
    agent_id: str
    steps: list[StepDiff] = field(default_factory=list)
    state: AgentState | None = None
    #: recorded outputs whose causing input is not in the history (e.g. past retention)
    orphans: int = 0
    #: what the replay emitted, in order
    emitted: list[Event] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return all(step.identical for step in self.steps)

    def waiting_for(self) -> list[str]:
        """What the agent's open run still waits for after the last recorded event (empty when
        no run is open): a replay can be identical and the agent stuck all the same."""
        run = self.state.run if self.state is not None else None
        if run is None:
            return []
        waits = []
        if self.state is not None and self.state.paused:
            waits.append("a resume of the paused agent")
        if run.pending_model_call is not None:
            waits.append(f"model call {run.pending_model_call}")
        for pending in run.pending_tools:
            what = _WAITS_FOR[pending.status]
            if pending.status == "delegated":
                what = f"{what} {pending.child_agent_id} to"
            waits.append(f"{what} {pending.tool} call {pending.call_id}")
        return waits

    def count(self, verdict: Verdict) -> int:
        return sum(1 for s in self.steps for o in s.outputs if o.verdict == verdict)

    def differing(self) -> list[StepDiff]:
        return [s for s in self.steps if not s.identical]


_WAITS_FOR = {
    "awaiting_approval": "approval of",
    "requested": "result of",
    "held": "a resume, for",
    "awaiting_callback": "a callback to",
    "sleeping": "the end of a sleep,",
    "delegated": "the answer of",
}


def replay_agent(history: AgentHistory, spec: Served) -> AgentReplay:
    """Fold ``history``'s inputs through ``spec`` and diff each step's outputs.

    Given several versions of the agent's kind, each run replays on the version it recorded
    (when it is among them), as the processor pinned it; given one, every run replays on it
    (a what-if)."""
    return replay_inputs(history, history.applied_order(spec), spec)


def replay_inputs(
    history: AgentHistory, inputs: list[Event], spec: Served, withheld: Collection[str] = ()
) -> AgentReplay:
    """Fold ``inputs`` (``history``'s, in the order to apply them, or others in their place)
    through ``spec`` and diff each step's outputs with those ``history`` recorded. The inputs
    whose ids are ``withheld`` are not applied: each of their recorded outputs is missing."""
    catalog = Catalog.of(spec)
    recorded = history.caused()
    pinned = _recorded_versions(history)
    result = AgentReplay(history.agent_id)
    state: AgentState | None = None
    applied: set[str] = set()
    for index, event in enumerate(inputs, start=1):
        event_id = event.envelope.event_id
        applied.add(event_id)
        if event_id in withheld:
            missing = diff_outputs(recorded.get(event_id, []), [])
            result.steps.append(StepDiff(index, event, missing, withheld=True))
            continue
        decision = _pinned_transition(state, event, catalog, pinned)
        state = decision.state
        result.emitted += decision.emits
        outputs = diff_outputs(recorded.get(event_id, []), list(decision.emits))
        rejection = None
        if isinstance(decision, Rejected):
            rejection = f"{decision.error_class}: {decision.reason}"
        duplicate = isinstance(decision, Duplicate)
        result.steps.append(StepDiff(index, event, outputs, rejection, duplicate))
    result.state = state
    result.orphans = sum(len(v) for k, v in recorded.items() if k not in applied)
    return result


def _recorded_versions(history: AgentHistory) -> dict[str, int]:
    """The spec version each recorded run started on, by run id."""
    found: dict[str, int] = {}
    for item in history.outputs:
        event = item.event
        run_id = event.envelope.run_id
        if (
            isinstance(
                event,
                ModelCallRequested | RunCompleted | RunFailed | RunCancelled | RunHandedOff,
            )
            and event.spec_version is not None
            and run_id is not None
        ):
            found.setdefault(run_id, event.spec_version)
    return found


def _pinned_transition(
    state: AgentState | None, event: Event, catalog: Catalog, pinned: dict[str, int]
) -> Decision:
    """``transition``, with a run that starts here started on its recorded version: the
    processor started it on the newest version of the agent's kind it served then, which may
    be older than the newest given now."""
    decision = transition(state, event, catalog)
    run = decision.state.run
    before = state.run.run_id if state is not None and state.run is not None else None
    if run is None or run.run_id == before or run.run_id not in pinned:
        return decision
    want = pinned[run.run_id]
    kind = catalog.kind(decision.state.kind)
    if kind is None or want == run.spec_version or kind.version(want) is None:
        return decision
    return transition(state, event, _served_up_to(catalog, kind, want))


def _served_up_to(catalog: Catalog, kind: SpecVersions, number: int) -> Catalog:
    """``catalog`` as it was when version ``number`` of ``kind`` was its newest."""
    return Catalog(tuple(k.up_to(number) if k is kind else k for k in catalog.kinds))


def diff_outputs(recorded: list[Event], replayed: list[Event]) -> tuple[OutputDiff, ...]:
    before = {e.envelope.event_id: e for e in recorded}
    after = {e.envelope.event_id: e for e in replayed}
    diffs = []
    for event_id in [*before, *(i for i in after if i not in before)]:
        old, new = before.get(event_id), after.get(event_id)
        if old is None:
            assert new is not None
            diffs.append(OutputDiff("new", event_id, type(new).__name__))
        elif new is None:
            diffs.append(OutputDiff("missing", event_id, type(old).__name__))
        else:
            changes = tuple(compare(plain(old), plain(new)))
            if type(old) is not type(new):
                changes = (Change("type", type(old).__name__, type(new).__name__), *changes)
            verdict: Verdict = "changed" if changes else "same"
            diffs.append(OutputDiff(verdict, event_id, type(new).__name__, changes))
    return tuple(diffs)


def plain(event: Event) -> Any:
    """The event as JSON, with the JSON held in its strings parsed."""
    data = event.model_dump(mode="json")
    # JSON held in strings (messages, tools, arguments) is compared as JSON, field by field
    for key, value in list(data.items()):
        if key.endswith("_json") and isinstance(value, str):
            with contextlib.suppress(ValueError):
                data[key] = json.loads(value)
    return data


def compare(old: Any, new: Any, path: str = "") -> list[Change]:
    """The leaves where two JSON values differ, as dotted paths."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            changes += compare(old.get(key), new.get(key), sub)
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        changes = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            changes += compare(a, b, f"{path}[{i}]")
        return changes
    return [] if old == new else [Change(path, old, new)]


def as_json(result: AgentReplay) -> dict[str, Any]:
    return {
        "agent_id": result.agent_id,
        "identical": result.identical,
        "steps": len(result.steps),
        "same": result.count("same"),
        "changed": result.count("changed"),
        "missing": result.count("missing"),
        "new": result.count("new"),
        "orphans": result.orphans,
        "open_run": result.state.run.run_id if result.state and result.state.run else None,
        "waiting_for": result.waiting_for(),
        "differences": [
            {
                "step": step.index,
                "cause": {
                    "type": type(step.cause).__name__,
                    "event_id": step.cause.envelope.event_id,
                },
                "rejection": step.rejection,
                "withheld": step.withheld,
                "outputs": [
                    {
                        "verdict": o.verdict,
                        "type": o.type,
                        "event_id": o.event_id,
                        "changes": [c.__dict__ for c in o.changes],
                    }
                    for o in step.outputs
                    if o.verdict != "same"
                ],
            }
            for step in result.differing()
        ],
    }
