"""The peers' side of ``agentstream bench peers`` at its smallest size: the JSON's shape, and a
peer that is not installed reported as such (with what to install), never dropped.

Speed is not asserted. The runner is driven with two stand-in peers, one that runs the 3-step
run inline and one that is never installed, so this takes seconds whether or not DBOS,
LangGraph, Restate or Temporal are installed here; the real peers that are missing here go
through the runner too, and must come out as "not installed".
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentstream.tools.harness.peers import runner, stand_ins
from agentstream.tools.harness.peers.base import NOT_INSTALLED
from agentstream.tools.harness.peers.report import MEASURED
from agentstream.tools.harness.peers.stepping import Plan

pytestmark = pytest.mark.integration

LEVEL_KEYS = {
    "offered_per_s",
    "seconds",
    "runs",
    "completed",
    "failed",
    "unfinished",
    "completed_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "cpu_seconds",
    "cpu_ms_per_run",
    "submit_lag_ms",
    "first_error",
    "load_average",
    "search",
}
PEER_KEYS = {
    "name",
    "status",
    "version",
    "reason",
    "max_load_under_bound_per_s",
    "most_completed_per_s",
    "cpu_ms_per_run",
    "restarts",
    "levels",
    "details",
}


class InlinePeer:
    """The run with no durability, in this process: the runner's path without a real peer."""

    name = "inline"

    def version(self) -> str:
        return "stand-ins only"

    def available(self) -> str | None:
        return None

    async def start(self, workdir: Path) -> None:
        assert workdir.is_dir()

    async def submit(self, run_id: str) -> Any:
        await asyncio.sleep(0.001)
        return stand_ins.run_inline(run_id)

    async def stop(self) -> None:
        return None

    def pids(self) -> list[int]:
        return []


class AbsentPeer(InlinePeer):
    name = "absent"

    def available(self) -> str | None:
        return "not installed: absent-runtime missing; pip install absent-runtime"


def _tiny(tmp_path: Path, *peers: str) -> list[str]:
    return [
        "--peers",
        ",".join(peers),
        "--loads",
        "20",
        "--seconds",
        "0.5",
        "--warmup-seconds",
        "0",
        "--drain-seconds",
        "2",
        "--no-find-max",
        "--json",
        str(tmp_path / "peers.json"),
    ]


def test_runner_writes_every_peer_measured_or_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(runner.PEERS, "inline", InlinePeer)
    monkeypatch.setitem(runner.PEERS, "absent", AbsentPeer)
    missing = [name for name, make in runner.PEERS.items() if make().available() is not None]
    assert runner.main(_tiny(tmp_path, "inline", *missing)) == 0

    report = json.loads((tmp_path / "peers.json").read_text())
    assert report["benchmark"] == "agentstream bench peers"
    assert report["plan"]["loads_per_s"] == [20.0]
    assert report["stand_in"]["cpu_ms_per_run"] > 0
    assert report["machine"]["cpu_count"] >= 1
    assert set(report["load_average"]) == {"start", "end"}
    assert set(report["peers"]) == {"inline", *missing}
    assert "absent" in missing

    inline = report["peers"]["inline"]
    assert set(inline) == PEER_KEYS
    assert inline["status"] == MEASURED, inline["reason"]
    [level] = inline["levels"]
    assert set(level) == LEVEL_KEYS
    assert level["runs"] == 10
    assert level["completed"] + level["failed"] + level["unfinished"] == level["runs"]
    assert level["completed"] > 0
    for name in ("p50_ms", "p95_ms", "p99_ms", "cpu_seconds"):
        assert level[name] is not None
        assert level[name] >= 0
    assert level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]

    for name in missing:
        peer = report["peers"][name]
        assert peer["status"] == NOT_INSTALLED
        assert peer["reason"].startswith("not installed:")
        assert "install" in peer["reason"].partition(";")[2]
        assert peer["levels"] == []


def test_every_real_peer_says_what_to_install_when_missing() -> None:
    for name, make in runner.PEERS.items():
        reason = make().available()
        assert reason is None or ("not installed" in reason and "install" in reason), name


def test_stepping_finds_the_highest_load_under_the_bound(tmp_path: Path) -> None:
    # A peer whose runs take longer as the load grows: p99 passes 250 ms near 50 runs/s.
    class Slowing(InlinePeer):
        name = "slowing"
        rate = 0.0

        async def submit(self, run_id: str) -> Any:
            await asyncio.sleep(0.005 * self.rate)
            return stand_ins.run_inline(run_id)

    peer = Slowing()
    plan = Plan(loads=(20.0, 100.0), seconds=0.2, drain_seconds=2, warmup_seconds=0)

    async def measure() -> Any:
        from agentstream.tools.harness.peers.load import offer
        from agentstream.tools.harness.peers.stepping import highest_under_bound

        async def step(rate: float) -> Any:
            peer.rate = rate
            return await offer(peer, rate, plan.seconds, drain_seconds=2, prefix=str(rate))

        levels = {rate: await step(rate) for rate in plan.loads}
        return await highest_under_bound(plan, levels, step), sorted(levels)

    best, tried = asyncio.run(measure())
    assert best is not None
    assert 20 <= best < 100
    assert tried[0] == 20
    assert tried[-1] == 100
    assert len(tried) == 2 + plan.refine_steps
