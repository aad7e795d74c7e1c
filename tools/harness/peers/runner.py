"""``agentstream bench peers``, the peers' side: every system in turn started fresh, probed,
warmed up, offered each fixed load and then stepped loads, and stopped, also on failure.

Run as ``python -m agentstream.tools.harness.peers.runner``; ``--help`` lists the sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from agentstream.tools.harness.bench_report import machine
from agentstream.tools.harness.peers import stand_ins
from agentstream.tools.harness.peers.base import NOT_INSTALLED, Peer, PeerError
from agentstream.tools.harness.peers.load import Level, offer
from agentstream.tools.harness.peers.peer_dbos import DbosPeer
from agentstream.tools.harness.peers.peer_langgraph import DURABILITIES, DURABILITY, LangGraphPeer
from agentstream.tools.harness.peers.peer_restate import RestatePeer
from agentstream.tools.harness.peers.peer_temporal import TemporalPeer
from agentstream.tools.harness.peers.report import (
    FAILED,
    MEASURED,
    PeerResult,
    PeersReport,
    table,
)
from agentstream.tools.harness.peers.stepping import Plan, highest_under_bound

#: Every peer this package drives, in the order they run.
PEERS: dict[str, Callable[[], Peer]] = {
    "restate": RestatePeer,
    "langgraph": LangGraphPeer,
    "dbos": DbosPeer,
    "temporal": TemporalPeer,
}
#: How long a fresh peer may take to answer its first run (first JIT, schema setup, polling).
PROBE_TIMEOUT_S = 60.0

#: Runs in flight during the warm-up.
WARMUP_LANES = 4

Say = Callable[[str], None]


def stand_in_cost(runs: int = 300) -> dict[str, float | int]:
    """The run's own CPU, with nothing durable around it: every system pays this much."""
    began = time.process_time()
    for index in range(runs):
        stand_ins.run_inline(f"floor-{index}")
    return {
        "rounds_per_step": stand_ins.ROUNDS,
        "cpu_ms_per_run": (time.process_time() - began) * 1000.0 / runs,
    }


class _Session:
    """One peer's measurement: restarts it on fresh state whenever a load leaves a backlog."""

    def __init__(self, peer: Peer, plan: Plan, root: Path, say: Say) -> None:
        self.peer, self.plan, self.root, self.say = peer, plan, root, say
        self.result = PeerResult(name=peer.name, status=MEASURED)
        self._starts = 0
        self._levels = 0

    async def start(self) -> None:
        self._starts += 1
        workdir = self.root / f"{self.peer.name}-{self._starts}"
        workdir.mkdir(parents=True)
        workdir.chmod(0o755)  # PostgreSQL runs as its own user when we are root
        await self.peer.start(workdir)
        probe = f"probe-{uuid.uuid4().hex[:12]}"
        result = await asyncio.wait_for(self.peer.submit(probe), PROBE_TIMEOUT_S)
        if stand_ins.answer_of(result) != stand_ins.expected_answer(probe):
            raise PeerError(f"{self.peer.name} answered the probe run with {result!r:.300}")
        await self._warm_up()

    async def _warm_up(self) -> None:
        """A few runs at a time, each started when one ends: unlike an offered load, this
        leaves no backlog behind on a peer slower than the lowest load."""
        deadline = time.monotonic() + self.plan.warmup_seconds
        tag = uuid.uuid4().hex[:8]

        async def runs(lane: int) -> None:
            count = 0
            while time.monotonic() < deadline:
                await self.peer.submit(f"warmup-{tag}-{lane}-{count}")
                count += 1

        await asyncio.gather(*(runs(lane) for lane in range(WARMUP_LANES)))

    async def restart(self) -> None:
        self.result.restarts += 1
        await self.peer.stop()
        await self.start()

    async def measure(self, rate: float, *, search: bool = False) -> Level:
        self._levels += 1
        prefix = f"{self.peer.name}-{self._starts}-{self._levels}-{uuid.uuid4().hex[:8]}"
        level = await offer(
            self.peer,
            rate,
            self.plan.seconds,
            drain_seconds=self.plan.drain_seconds,
            prefix=prefix,
            search=search,
        )
        self.result.levels.append(level)
        self.say(_line(self.peer.name, level))
        if not level.clean:
            await self.restart()
        return level

    async def run(self) -> None:
        await self.start()
        self.result.version = self.peer.version()
        found: dict[float, Level] = {}
        for rate in sorted(self.plan.loads):
            found[rate] = await self.measure(rate)
        bound = self.plan.p99_bound_ms
        if self.plan.find_max:

            async def step(rate: float) -> Level:
                return await self.measure(rate, search=True)

            self.result.max_load_under_bound = await highest_under_bound(self.plan, found, step)
        else:
            passing = [rate for rate, level in found.items() if level.under(bound)]
            self.result.max_load_under_bound = max(passing, default=None)


def _line(name: str, level: Level) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    kind = "step" if level.search else "load"
    text = (
        f"{name} {kind} {level.offered_per_s:g}/s: p50 {ms(level.p50_ms)} p95 {ms(level.p95_ms)} "
        f"p99 {ms(level.p99_ms)} ms, {level.completed}/{level.runs} ended "
        f"({level.completed_per_s:.0f}/s), CPU {ms(level.cpu_ms_per_run)} ms/run, "
        f"machine load {level.load_average:.1f}"
    )
    if not level.clean:
        text += f", {level.failed} failed, {level.unfinished} unfinished"
        if level.first_error:
            text += f" (first error: {level.first_error[:200]})"
    return text


async def measure_peer(peer: Peer, plan: Plan, root: Path, say: Say) -> PeerResult:
    """One peer, from start to stop; a missing peer is reported as such, never dropped."""
    reason = peer.available()
    if reason is not None:
        say(f"{peer.name}: {reason}")
        return PeerResult(name=peer.name, status=NOT_INSTALLED, reason=reason)
    session = _Session(peer, plan, root, say)
    try:
        await session.run()
    except Exception as exc:
        session.result.status = FAILED
        session.result.reason = f"{type(exc).__name__}: {exc}"[:2000]
        say(f"{peer.name} failed: {session.result.reason}")
    finally:
        await peer.stop()
    if not session.result.version:
        session.result.version = peer.version()
    return session.result


def measure_all(
    peers: Sequence[Peer], plan: Plan, *, say: Say, keep_dir: Path | None = None
) -> PeersReport:
    """Every peer in turn, on this machine; the runner of ``agentstream bench peers``.

    Each peer gets an event loop of its own, so what one leaves on its loop (DBOS replaces the
    default executor and shuts it down on exit) cannot slow or break the next. Call it from
    the main thread: the servers die with the thread that started them.
    """
    began = time.monotonic()
    report = PeersReport(
        plan=plan,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        stand_in=stand_in_cost(),
        load_average={"start": list(os.getloadavg())},
    )
    root = keep_dir or Path(tempfile.mkdtemp(prefix="agentstream-peers-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    try:
        for peer in peers:
            report.peers.append(_cancellable(measure_peer(peer, plan, root, say)))
    finally:
        if keep_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    report.seconds = time.monotonic() - began
    report.load_average["end"] = list(os.getloadavg())
    return report


def _cancellable(work: Coroutine[Any, Any, PeerResult]) -> PeerResult:
    """Run ``work`` on a fresh loop where SIGTERM (a CI limit, a closed terminal) cancels it
    like Ctrl-C does, so the peer's ``stop`` still runs."""

    async def guarded() -> PeerResult:
        task = asyncio.current_task()
        if task is not None and threading.current_thread() is threading.main_thread():
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await work

    return asyncio.run(guarded())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = Plan()
    parser = argparse.ArgumentParser(
        prog="agentstream-bench-peers",
        description="The 3-step agent run on DBOS, LangGraph, Restate and Temporal, open loop.",
    )
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated, from {', '.join(PEERS)} [all]",
    )
    parser.add_argument(
        "--loads",
        type=_floats,
        default=defaults.loads,
        help="offered loads, runs/s [20,50,100,200]",
    )
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="per load [10]")
    parser.add_argument(
        "--drain-seconds", type=float, default=defaults.drain_seconds, help="wait for stragglers"
    )
    parser.add_argument("--warmup-seconds", type=float, default=defaults.warmup_seconds)
    parser.add_argument("--p99-bound-ms", type=float, default=defaults.p99_bound_ms)
    parser.add_argument(
        "--no-find-max",
        action="store_true",
        help="do not step the load past the fixed ones",
    )
    parser.add_argument("--max-load", type=float, default=defaults.max_load)
    parser.add_argument("--refine-steps", type=int, default=defaults.refine_steps)
    parser.add_argument(
        "--langgraph-durability",
        choices=DURABILITIES,
        default=DURABILITY,
        help="when LangGraph writes a step's checkpoint [sync: before the next step runs]",
    )
    parser.add_argument(
        "--temporal-local-activities",
        action="store_true",
        help="Temporal runs the steps as local activities (recorded when the workflow task ends)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--keep-dir", type=Path, default=None, help="keep data and logs of every peer here"
    )
    return parser.parse_args(argv)


def plan_of(args: argparse.Namespace) -> Plan:
    return Plan(
        loads=tuple(sorted(args.loads)),
        seconds=args.seconds,
        drain_seconds=args.drain_seconds,
        warmup_seconds=args.warmup_seconds,
        p99_bound_ms=args.p99_bound_ms,
        find_max=not args.no_find_max,
        max_load=args.max_load,
        refine_steps=args.refine_steps,
    )


def peers_named(
    names: str,
    *,
    langgraph_durability: str = DURABILITY,
    temporal_local_activities: bool = False,
) -> list[Peer]:
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(PEERS))
    if unknown:
        raise SystemExit(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    configured: dict[str, Callable[[], Peer]] = {
        "langgraph": lambda: LangGraphPeer(langgraph_durability),
        "temporal": lambda: TemporalPeer(local_activities=temporal_local_activities),
    }
    return [configured.get(name, PEERS[name])() for name in wanted]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Off a terminal rich assumes 80 columns, too narrow for the table in a log.
    screen = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
    try:
        report = measure_all(
            peers_named(
                args.peers,
                langgraph_durability=args.langgraph_durability,
                temporal_local_activities=args.temporal_local_activities,
            ),
            plan_of(args),
            say=lambda text: screen.print(text, markup=False),
            keep_dir=args.keep_dir,
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        screen.print("stopped; every peer was shut down")
        return 130
    screen.print(table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")
        screen.print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
