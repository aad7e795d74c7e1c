"""Recorded histories replayed through today's transition reproduce their outputs exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden import GOLDEN_DIR, event_from_json, load, replay
from golden_scenarios import SCENARIOS, TEAM_SCENARIOS

FILES = sorted(GOLDEN_DIR.glob("*.jsonl"))


def test_every_scenario_has_a_recording() -> None:
    assert {f.stem for f in FILES} == set(SCENARIOS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_replay_reproduces_the_recorded_outputs(path: Path) -> None:
    recorded = load(path)
    assert recorded, "empty recording"
    spec = SCENARIOS[path.stem][0]
    replayed = replay(recorded, spec)
    for number, (want, got) in enumerate(zip(recorded, replayed, strict=True), start=1):
        assert got.emits == want.emits, f"{path.name}:{number}: outputs differ"
        assert got.rejection == want.rejection, f"{path.name}:{number}: rejection differs"
        assert got.version == want.version, f"{path.name}:{number}: version differs"
    assert any(line.emits for line in recorded)


@pytest.mark.parametrize("name", sorted(TEAM_SCENARIOS))
def test_a_team_history_holds_several_agents_and_dead_letters_nothing(name: str) -> None:
    lines = load(GOLDEN_DIR / f"{name}.jsonl")
    agents = {event_from_json(line.event).envelope.agent_id for line in lines}
    assert len(agents) > 1, agents
    assert [line.rejection for line in lines if line.rejection] == []
