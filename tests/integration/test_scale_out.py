"""Scale-out: processors, workers and projectors join and leave their groups under load, on
every broker; each agent's events keep reaching the one member that holds its state."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from agentstream.streams.runtime.settings import Settings
from agentstream.tools.harness.scale_driver import ScaleConfig, run_scale_out

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_three_processors_join_and_leave_under_load_and_every_run_ends_once(
    settings: Settings, schema: str, tmp_path: Path
) -> None:
    isolated = settings.model_copy(update={"topic_prefix": f"sc{uuid.uuid4().hex[:6]}."})
    report = run_scale_out(isolated, tmp_path, ScaleConfig(), schema=schema, progress=print)
    print(f"\nscale-out: {report.figures()} in {report.total_seconds:.0f}s")
    assert report.ok, "\n".join(report.verdict.problems)
    assert max(members for _t, _move, members in report.moves) == 3
    assert report.moves[-1][2] == 1, "the extra processors left again"
    v = report.verdict
    assert (v.lost, v.duplicated, v.projection_equal, v.dead_letters) == (0, 0, True, 0)
    assert v.runs == 120 and v.completed + v.failed == 120
