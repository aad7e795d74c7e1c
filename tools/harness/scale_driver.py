"""The scale-out run: members join and leave the services' groups while runs flow.

Every service of ``dev up`` starts with one member; under a steady stream of inputs a second and
a third processor join, a second tool worker, model worker and projector join, and then all of
them leave again (SIGTERM: they finish their batch and leave the group). Afterwards the chaos
checks prove that no run stalled, none ended twice, no transition was applied twice or lost,
nothing went to the dead-letter topic (an agent's events always reached the member holding its
state), and the read models equal a rebuild. The test ``tests/integration/test_scale_out.py``
and ``agentstream chaos --scale-out`` call ``run_scale_out``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from agentstream.processors.loading import DEFAULT_SPEC, load_spec
from agentstream.schemas.events import AgentInput
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.tools.devstack.services import ServiceSupervisor
from agentstream.tools.harness import chaos_checks
from agentstream.tools.harness.chaos_services import prepare_services, reliability_services
from agentstream.tools.harness.chaos_workload import AutoApprover, questions, stamped_now

Progress = Callable[[str], None]


class Move(StrEnum):
    JOIN = "join"
    LEAVE = "leave"


#: The membership changes, one between two slices of inputs: (move, service, member number).
DEFAULT_PLAN: tuple[tuple[Move, str, int], ...] = (
    (Move.JOIN, "processor", 2),
    (Move.JOIN, "processor", 3),
    (Move.JOIN, "tool-worker", 2),
    (Move.JOIN, "model-worker", 2),
    (Move.JOIN, "projector", 2),
    (Move.LEAVE, "processor", 3),
    (Move.LEAVE, "tool-worker", 2),
    (Move.LEAVE, "processor", 2),
    (Move.LEAVE, "model-worker", 2),
    (Move.LEAVE, "projector", 2),
)


@dataclass(frozen=True)
class ScaleConfig:
    agents: int = 60
    runs_per_agent: int = 2
    seed: int = 1
    plan: tuple[tuple[Move, str, int], ...] = DEFAULT_PLAN
    #: seconds of load between two membership changes
    gap_s: float = 1.5
    settle_timeout_s: float = 180.0
    spec: str = DEFAULT_SPEC


@dataclass
class ScaleReport:
    config: ScaleConfig
    verdict: chaos_checks.Verdict
    #: (seconds since the start, what changed, members of the processor group afterwards)
    moves: list[tuple[float, str, int]] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.verdict.problems

    def figures(self) -> str:
        v = self.verdict
        most = max((members for _t, _m, members in self.moves), default=1)
        return (
            f"runs={v.runs} (completed={v.completed} failed={v.failed}) "
            f"membership changes={len(self.moves)} most processors={most} lost={v.lost} "
            f"duplicated={v.duplicated} applied_checked={v.applied_checked} "
            f"dead_letters={v.dead_letters} projection_equals_rebuild={v.projection_equal}"
        )


def run_scale_out(
    settings: Settings,
    workdir: Path,
    config: ScaleConfig,
    *,
    schema: str,
    progress: Progress = lambda _: None,
) -> ScaleReport:
    """Run the workload while members join and leave; every process started here is stopped
    here."""
    began = time.monotonic()
    inputs = questions(config.agents, config.runs_per_agent, config.seed)
    report = ScaleReport(config, chaos_checks.Verdict())
    services = prepare_services(config.spec, settings, schema, workdir, "scale.")
    prefix = settings.topic_prefix or "scale."
    approver = AutoApprover(settings)
    try:
        services.start(timeout=90.0)
        approver.start()
        progress(f"services ready in {time.monotonic() - began:.1f}s")
        _under_moves(
            settings,
            services,
            inputs=inputs,
            config=config,
            report=report,
            prefix=prefix,
            schema=schema,
            progress=progress,
        )
        for service in services.services:
            service.wait_ready(config.settle_timeout_s)
        found = chaos_checks.wait_for_outcomes(settings, len(inputs), config.settle_timeout_s)
        progress(f"{len(found)}/{len(inputs)} runs ended; waiting for the projection")
        if not chaos_checks.wait_projection_caught_up(settings, schema, config.settle_timeout_s):
            report.verdict.problem("the projector did not catch up with the topics")
    finally:
        try:
            approver.stop()
        finally:
            report.exit_codes.update(services.stop())
    for name, code in report.exit_codes.items():
        if code != 0:
            report.verdict.problem(f"the {name} exited with {code} on SIGTERM")
    verdict = report.verdict
    chaos_checks.check_outcomes(settings, inputs, verdict)
    chaos_checks.check_states_fold(settings, load_spec(config.spec), inputs, verdict)
    chaos_checks.check_projection(settings, schema, verdict)
    chaos_checks.check_dead_letters(settings, [], verdict)
    verdict.events = chaos_checks.count_events(settings)
    report.total_seconds = time.monotonic() - began
    return report


def _under_moves(
    settings: Settings,
    services: ServiceSupervisor,
    *,
    inputs: list[AgentInput],
    config: ScaleConfig,
    report: ScaleReport,
    prefix: str,
    schema: str,
    progress: Progress,
) -> None:
    """Send the inputs in slices and change the membership between two slices, so every change
    meets runs in flight."""
    began = time.monotonic()
    slices = len(config.plan) + 1
    per_slice = len(inputs) // slices + 1
    with AgentStreamProducer(settings) as producer:
        for n in range(slices):
            for event in inputs[n * per_slice : (n + 1) * per_slice]:
                producer.send_async(stamped_now(event))
            producer.flush()
            time.sleep(config.gap_s)
            if n == len(config.plan):
                break
            move, name, member = config.plan[n]
            member_name = f"{name}-{member}"
            if move is Move.JOIN:
                extra = reliability_services(config.spec, prefix, schema, instance=member)
                services.add(next(c for c in extra if c.name == member_name), timeout=90.0)
            else:
                code = services.remove(member_name)
                report.exit_codes[member_name] = code
            processors = sum(1 for s in services.services if s.name.startswith("processor"))
            report.moves.append((time.monotonic() - began, f"{move} {member_name}", processors))
            progress(f"{member_name} {'joined' if move is Move.JOIN else 'left'}")
