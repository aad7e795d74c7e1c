"""What ``agentstream bench peers`` found: per system its latencies at each offered load, the
highest load whose p99 stays under the bound, its CPU per run; as JSON and as a rich table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape
from rich.table import Table

from agentstream.tools.harness.peers.base import NOT_INSTALLED
from agentstream.tools.harness.peers.load import Level
from agentstream.tools.harness.peers.stepping import Plan

MEASURED = "measured"
FAILED = "failed"


@dataclass
class PeerResult:
    name: str
    status: str
    version: str = ""
    #: why a peer is not installed (with what to install), or what failed
    reason: str | None = None
    levels: list[Level] = field(default_factory=list)
    max_load_under_bound: float | None = None
    #: restarts after a load left runs unfinished, so the next load starts without a backlog
    restarts: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def at(self, load: float) -> Level | None:
        return next((lv for lv in self.levels if lv.offered_per_s == load and not lv.search), None)

    @property
    def most_completed_per_s(self) -> float | None:
        return max((lv.completed_per_s for lv in self.levels), default=None)

    @property
    def cpu_ms_per_run(self) -> float | None:
        """Over the fixed loads every run of which ended (else over every such load): saturated
        loads would count the CPU of runs that never finished against those that did."""
        clean = [lv for lv in self.levels if not lv.search and lv.clean]
        clean = clean or [lv for lv in self.levels if lv.clean]
        runs = sum(lv.completed for lv in clean)
        return sum(lv.cpu_seconds for lv in clean) * 1000.0 / runs if runs else None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "version": self.version,
            "reason": self.reason,
            "max_load_under_bound_per_s": self.max_load_under_bound,
            "most_completed_per_s": self.most_completed_per_s,
            "cpu_ms_per_run": self.cpu_ms_per_run,
            "restarts": self.restarts,
            "levels": [lv.as_json() for lv in sorted(self.levels, key=_level_order)],
            "details": self.details,
        }


def _level_order(level: Level) -> tuple[float, bool]:
    return (level.offered_per_s, level.search)


@dataclass
class PeersReport:
    plan: Plan
    started_at: str
    machine: dict[str, Any]
    stand_in: dict[str, Any]
    peers: list[PeerResult] = field(default_factory=list)
    seconds: float = 0.0
    #: the machine's 1-, 5- and 15-minute load averages at the start and at the end
    load_average: dict[str, list[float]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "benchmark": "agentstream bench peers",
            "started_at": self.started_at,
            "seconds": self.seconds,
            "plan": self.plan.as_json(),
            "machine": self.machine,
            "stand_in": self.stand_in,
            "load_average": self.load_average,
            "peers": {peer.name: peer.as_json() for peer in self.peers},
        }


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.1f}s"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def _cell(level: Level | None) -> str:
    if level is None:
        return ""
    text = f"{_ms(level.p50_ms)} / {_ms(level.p95_ms)} / {_ms(level.p99_ms)}"
    if not level.clean:
        left = level.unfinished + level.failed
        text += f"\n[red]{left}/{level.runs} no result[/red]"
        text += f"\n{level.completed_per_s:,.0f}/s ended"
    return text


def table(report: PeersReport) -> Table:
    plan = report.plan
    start = report.load_average.get("start", [0.0])[0]
    end = report.load_average.get("end", [0.0])[0]
    grid = Table(
        title="agentstream bench peers: the 3-step run, open loop",
        caption=(
            f"{report.started_at}, {report.machine.get('cpu_count', '?')} CPUs "
            f"({report.machine.get('cpu_model', '?')}), machine load {start:.1f} at the start, "
            f"{end:.1f} at the end; {plan.seconds:g} s per load; stand-ins "
            f"{report.stand_in.get('cpu_ms_per_run', 0.0):.2f} ms CPU per run"
        ),
    )
    grid.add_column("system", justify="left")
    for load in plan.loads:
        grid.add_column(f"{load:g}/s\np50 / p95 / p99 ms", justify="right")
    grid.add_column(f"most runs/s with\np99 < {plan.p99_bound_ms:g} ms", justify="right")
    grid.add_column("most runs/s\nended", justify="right")
    grid.add_column("CPU ms\nper run", justify="right")
    for peer in report.peers:
        label = f"[bold]{escape(peer.name)}[/bold]\n{escape(peer.version)}"
        if peer.status != MEASURED:
            colour = "yellow" if peer.status == NOT_INSTALLED else "red"
            reason = (peer.reason or "").removeprefix(f"{peer.status}: ")
            note = f"[{colour}]{peer.status}[/{colour}]: {escape(reason)}"
            grid.add_row(label, note, *[""] * (len(plan.loads) + 2))
            continue
        best = peer.max_load_under_bound
        grid.add_row(
            label,
            *[_cell(peer.at(load)) for load in plan.loads],
            ("below " + f"{plan.min_load:g}") if best is None and plan.find_max else _rate(best),
            _rate(peer.most_completed_per_s),
            _ms(peer.cpu_ms_per_run),
        )
    return grid


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"
