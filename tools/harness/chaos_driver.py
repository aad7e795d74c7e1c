"""The chaos run: many agents' runs flow through the real services (processor, tool worker,
model worker, approval timer, projector; each its own process) while a driver SIGKILLs a random
service at random moments and restarts it. Afterwards ``chaos_checks`` proves what the product
promises. ``agentstream chaos`` and the test ``tests/integration/test_chaos.py`` both call
``run_chaos``.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentstream.processors.core.machine import run_id_of
from agentstream.processors.loading import DEFAULT_SPEC, load_catalog
from agentstream.schemas.events import AgentInput
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.tools.devstack.services import ServiceSupervisor
from agentstream.tools.devstack.stack import Broker
from agentstream.tools.harness import chaos_checks
from agentstream.tools.harness.chaos_services import prepare_services
from agentstream.tools.harness.chaos_workload import (
    TEAM_SPEC,
    AutoApprover,
    BadRecord,
    Steering,
    questions,
    send_bad_records,
    stamped_now,
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ChaosConfig:
    agents: int = 40
    runs_per_agent: int = 2
    kills: int = 20
    seed: int = 1
    #: seconds between two kills, drawn uniformly
    min_gap_s: float = 0.4
    max_gap_s: float = 2.0
    bad_records: int = 6
    #: how many of the kills hit the broker itself (it must keep its log: Apache Kafka)
    broker_kills: int = 0
    settle_timeout_s: float = 180.0
    spec: str = DEFAULT_SPEC
    #: kinds served beside ``spec``, whose agents the workload asks too: delegating and
    #: handing off (none: only ``spec``'s agents)
    team: tuple[str, ...] = (TEAM_SPEC,)

    @property
    def specs(self) -> list[str]:
        return [self.spec, *self.team]


@dataclass
class ChaosReport:
    config: ChaosConfig
    verdict: chaos_checks.Verdict
    kills: Counter[str] = field(default_factory=Counter)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    chaos_seconds: float = 0.0
    settle_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.verdict.problems

    def figures(self) -> str:
        v = self.verdict
        return (
            f"events={v.events} runs={v.runs} (completed={v.completed} failed={v.failed} "
            f"cancelled={v.cancelled} handed_off={v.handed_off}) "
            f"delegations={v.delegations} (answers {v.delegation_answers}) "
            f"outcome_records={v.outcome_records} kills={sum(self.kills.values())} "
            f"({', '.join(f'{k} {n}' for k, n in sorted(self.kills.items()))}) "
            f"lost={v.lost} duplicated={v.duplicated} applied_checked={v.applied_checked} "
            f"dead_letters={v.dead_letters} (expected distinct {v.dead_letters_expected}) "
            f"projection_equals_rebuild={v.projection_equal}"
        )


def run_chaos(
    settings: Settings,
    workdir: Path,
    config: ChaosConfig,
    *,
    schema: str,
    progress: Progress = lambda _: None,
    broker: Broker | None = None,
) -> ChaosReport:
    """Run the workload under kills on ``settings`` (topics under its own prefix) and the
    projection schema ``schema``; every process started here is stopped here. ``broker`` is the
    broker process that ``config.broker_kills`` of the kills hit (restarted at once)."""
    if config.broker_kills and broker is None:
        raise ValueError("broker kills need the broker process")
    began = time.monotonic()
    catalog = load_catalog(config.specs)
    inputs = questions(
        config.agents, config.runs_per_agent, config.seed, with_team=bool(config.team)
    )
    steering = Steering.of(inputs)
    report = ChaosReport(config, chaos_checks.Verdict())
    services = prepare_services(config.specs, settings, schema, workdir, "chaos.")
    approver = AutoApprover(settings)
    try:
        services.start(timeout=90.0)
        approver.start()
        progress(f"services ready in {time.monotonic() - began:.1f}s; {config.kills} kills to go")
        bad = _under_kills(
            settings,
            services=services,
            broker=broker,
            inputs=inputs,
            steering=steering,
            config=config,
            report=report,
            progress=progress,
        )
        _settle(
            settings,
            services=services,
            inputs=inputs,
            schema=schema,
            config=config,
            report=report,
            progress=progress,
        )
    finally:
        try:
            approver.stop()
        finally:
            report.exit_codes = services.stop()
    for name, code in report.exit_codes.items():
        if code != 0:
            report.verdict.problem(f"the {name} exited with {code} on SIGTERM")
    progress("checking outcomes, states, read models and dead letters")
    verdict = report.verdict
    chaos_checks.check_outcomes(settings, inputs, verdict)
    chaos_checks.check_states_fold(settings, catalog, inputs, verdict, may_refuse=steering.cancels)
    chaos_checks.check_projection(settings, schema, verdict)
    chaos_checks.check_dead_letters(settings, bad, verdict, may_refuse=steering.cancels)
    verdict.events = chaos_checks.count_events(settings)
    report.total_seconds = time.monotonic() - began
    return report


def _under_kills(
    settings: Settings,
    *,
    services: ServiceSupervisor,
    broker: Broker | None,
    inputs: list[AgentInput],
    steering: Steering,
    config: ChaosConfig,
    report: ChaosReport,
    progress: Progress,
) -> list[BadRecord]:
    """Send the inputs in slices, one between two kills, so the kills hit work in flight."""
    rng = random.Random(config.seed)
    # Broker kills spread evenly over the run; the others hit a random service.
    step = (config.kills + 1) / (config.broker_kills + 1)
    broker_at = {round(step * (i + 1)) - 1 for i in range(min(config.broker_kills, config.kills))}
    began = time.monotonic()
    slices = config.kills + 1
    per_slice = len(inputs) // slices + 1
    with AgentStreamProducer(settings) as producer:
        bad = send_bad_records(settings, producer, config.bad_records)
        for event in steering.first():
            producer.send_async(event)
        for n in range(slices):
            for event in inputs[n * per_slice : (n + 1) * per_slice]:
                producer.send_async(stamped_now(event))
            producer.flush()
            if n == config.kills:
                break
            time.sleep(rng.uniform(config.min_gap_s, config.max_gap_s))
            if broker is not None and n in broker_at:
                # Every service up first: a broker that dies under a worker's startup is the
                # stall the workers' own startup deadline handles, not what this run checks.
                for service in services.services:
                    service.wait_ready(90.0)
                began_restart = time.monotonic()
                broker.kill()
                broker.start()
                report.kills["broker"] += 1
                progress(
                    f"kill {n + 1}/{config.kills}: broker "
                    f"(back in {time.monotonic() - began_restart:.1f}s)"
                )
                continue
            victim = rng.choice(services.services)
            if not victim.alive():
                report.verdict.problem(
                    f"the {victim.name} exited on its own:\n{victim.log_tail(5)}"
                )
            victim.kill()
            report.kills[victim.name] += 1
            victim.start()
            progress(f"kill {n + 1}/{config.kills}: {victim.name}")
        # the paused agents' runs wait for the resume; every other run ends first, and every
        # run started by a run (no such run is of a paused agent)
        going = {run_id_of(e.event_id) for e in inputs if e.agent_id not in steering.paused}
        chaos_checks.wait_for_runs(settings, going, config.settle_timeout_s)
        for event in steering.last():
            producer.send_async(event)
        producer.flush()
    report.chaos_seconds = time.monotonic() - began
    return bad


def _settle(
    settings: Settings,
    *,
    services: ServiceSupervisor,
    inputs: list[AgentInput],
    schema: str,
    config: ChaosConfig,
    report: ChaosReport,
    progress: Progress,
) -> None:
    """Wait for every run's outcome (the runs that runs started too) and for the projector to
    reach the topics' end."""
    began = time.monotonic()
    for service in services.services:
        service.wait_ready(config.settle_timeout_s)
    workload = {run_id_of(e.event_id) for e in inputs}
    runs = chaos_checks.wait_for_runs(settings, workload, config.settle_timeout_s)
    started = runs.started(workload)
    ended = started & runs.outcomes.keys()
    progress(f"{len(ended)}/{len(started)} runs ended; waiting for the projection")
    if not chaos_checks.wait_projection_caught_up(settings, schema, config.settle_timeout_s):
        report.verdict.problem("the projector did not catch up with the topics")
    report.settle_seconds = time.monotonic() - began
    for service in services.services:
        if not service.alive():
            report.verdict.problem(f"the {service.name} exited on its own")
