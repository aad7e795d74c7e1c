"""Snapshots in state format 1 (written before memory and run control) are upcast, and their
agents carry on as the golden histories recorded: tests/golden/snapshots/format1_*.json were
written by the code of format 1, part-way through three of the golden histories."""

from __future__ import annotations

import json
from typing import Any

import pytest
from golden import GOLDEN_DIR, event_from_json, event_json, load
from golden_scenarios import SCENARIOS

from agentstream.processors.core.machine import Applied, fold, transition
from agentstream.processors.core.spec import AgentSpec
from agentstream.processors.core.state import STATE_FORMAT, AgentState, evolve
from agentstream.schemas.errors import ConfigurationError

SNAPSHOTS = GOLDEN_DIR / "snapshots"

#: each snapshot: the golden history it was taken in, and after how many of its events
TAKEN = {
    "format1_awaiting_approval": ("refund_approved", 2),
    "format1_running_with_queue": ("queued_inputs", 3),
    "format1_idle": ("lookup_run", 4),
}


def _history(name: str) -> tuple[AgentSpec, list[Any]]:
    spec = SCENARIOS[name][0]
    assert isinstance(spec, AgentSpec)
    return spec, load(GOLDEN_DIR / f"{name}.jsonl")


def _upcast(snapshot: str) -> AgentState:
    return AgentState.from_json((SNAPSHOTS / f"{snapshot}.json").read_text(), 1)


def test_every_snapshot_is_covered() -> None:
    assert {p.stem for p in SNAPSHOTS.glob("format1_*.json")} == set(TAKEN)


@pytest.mark.parametrize("snapshot", sorted(TAKEN))
def test_a_format_1_snapshot_is_written_without_the_new_fields(snapshot: str) -> None:
    data = json.loads((SNAPSHOTS / f"{snapshot}.json").read_text())
    assert not {"paused", "conversation", "facts", "cancelled_runs"} & data.keys()
    assert data["run"] is None or "spec_version" not in data["run"]


@pytest.mark.parametrize("snapshot", sorted(TAKEN))
def test_an_upcast_snapshot_is_the_state_today_with_its_run_unpinned(snapshot: str) -> None:
    """...and with no kind bound: an agent from before kinds is served by the default kind."""
    name, taken_after = TAKEN[snapshot]
    spec, lines = _history(name)
    today = fold([event_from_json(line.event) for line in lines[:taken_after]], spec)
    assert today is not None and today.kind == spec.name
    today = evolve(today, kind=None)
    if today.run is not None:
        today = evolve(today, run=evolve(today.run, spec_version=None, spec_hash=None))
    upcast = _upcast(snapshot)
    assert upcast == today
    assert AgentState.from_json(upcast.to_json(), STATE_FORMAT) == upcast


def _unpinned(emitted: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    """A recorded output as a run upcast from format 1 emits it: with no spec version."""
    data = emitted["data"]
    if data["envelope"]["run_id"] != run_id or "spec_version" not in data:
        return emitted
    return {**emitted, "data": {**data, "spec_version": None, "spec_hash": None}}


@pytest.mark.parametrize("snapshot", sorted(TAKEN))
def test_the_rest_of_the_history_folds_from_an_upcast_snapshot_as_recorded(snapshot: str) -> None:
    name, taken_after = TAKEN[snapshot]
    spec, lines = _history(name)
    state = _upcast(snapshot)
    upcast_run = state.run.run_id if state.run is not None else None
    rest = lines[taken_after:]
    assert rest or state.run is None  # only the idle snapshot was taken at the end
    for line in rest:
        decision = transition(state, event_from_json(line.event), spec)
        assert isinstance(decision, Applied) and line.rejection is None
        assert [event_json(e) for e in decision.emits] == [
            _unpinned(e, upcast_run) for e in line.emits
        ]
        assert decision.state.version == line.version
        state = decision.state
    assert state.run is None and state.queue == ()


@pytest.mark.parametrize("state_format", [0, STATE_FORMAT + 1])
def test_an_unknown_state_format_raises(state_format: int) -> None:
    text = (SNAPSHOTS / "format1_idle.json").read_text()
    with pytest.raises(ConfigurationError, match=f"in state format {state_format};"):
        AgentState.from_json(text, state_format)
