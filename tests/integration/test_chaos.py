"""The chaos test at CI size: the real services under random SIGKILLs (``agentstream chaos``
runs the same driver at any size); and a short soak (``agentstream soak`` runs it for minutes)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from kafka_reading import aborted_positions

from agentstream.projections.database import connect
from agentstream.streams.runtime.settings import Settings
from agentstream.tools.devstack.stack import Broker
from agentstream.tools.harness.chaos_driver import ChaosConfig, run_chaos
from agentstream.tools.harness.soak_driver import SoakConfig, run_soak
from agentstream.tools.harness.soak_memory import verdict

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def test_runs_survive_twenty_random_sigkills_of_the_services(
    settings: Settings, schema: str, tmp_path: Path, broker_kind: str, broker: Broker | None
) -> None:
    """On Apache Kafka the processor also writes in transactions and 3 of the kills hit the
    broker itself (its log is on disk); the embedded broker loses its topics on a restart and
    shows aborted records to every reader, so there the kills spare it."""
    on_kafka = broker_kind == "kafka" and broker is not None
    isolated = settings.model_copy(
        update={"topic_prefix": f"ch{uuid.uuid4().hex[:6]}.", "processor_transactions": on_kafka}
    )
    # kills 0.2-1 s apart: each still hits runs in flight (a run takes about a second here)
    config = ChaosConfig(
        agents=40,
        runs_per_agent=2,
        kills=20,
        seed=11,
        broker_kills=3 * on_kafka,
        min_gap_s=0.2,
        max_gap_s=1.0,
    )
    report = run_chaos(
        isolated,
        tmp_path,
        config,
        schema=schema,
        progress=print,
        broker=broker if on_kafka else None,
    )
    print(
        f"\nchaos test: {report.figures()} in {report.total_seconds:.0f}s (under kills "
        f"{report.chaos_seconds:.0f}s, settling {report.settle_seconds:.0f}s)"
    )
    assert report.ok, "\n".join(report.verdict.problems)
    assert sum(report.kills.values()) >= 20
    services = {"processor", "projector", "approval-timer", "tool-worker", "model-worker"}
    assert set(report.kills) >= services, "every service was killed at least once"
    assert report.kills["broker"] == (3 if on_kafka else 0)
    v = report.verdict
    assert (v.lost, v.duplicated, v.projection_equal) == (0, 0, True)
    # 80 runs asked for, and the runs they started: the planners' 7 runs (the eighth was
    # cancelled before it started) asked two agents each, the concierges' 4 runs handed off
    assert (v.delegations, v.handed_off) == (14, 4)
    assert v.delegation_answers == v.delegations
    assert v.runs == 80 + 14 + 4
    assert v.completed + v.failed + v.cancelled + v.handed_off == v.runs
    # the last run of every twelfth agent (paused, so still queued) was cancelled
    assert v.cancelled == 4
    # six poison records, each dead-lettered once, by the service that consumes its topic
    assert v.dead_letters_expected == 6 and v.dead_letters >= 6
    if on_kafka:
        # the projector reads committed records only: no aborted record is in the audit log
        aborted = aborted_positions(isolated)
        with connect(isolated.require_database_url(), schema) as conn:
            projected = set(conn.execute('SELECT topic, "partition", "offset" FROM agent_events'))
        assert not projected & aborted


def test_a_short_soak_ends_every_run_and_samples_each_service(
    settings: Settings, schema: str, tmp_path: Path
) -> None:
    isolated = settings.model_copy(update={"topic_prefix": f"sk{uuid.uuid4().hex[:6]}."})
    config = SoakConfig(seconds=8, rate=10, agents=20, sample_every_s=1, drain_timeout_s=60)
    report = run_soak(isolated, tmp_path, config, schema=schema)
    assert not report.problems, report.problems
    assert report.sent >= 70 and report.ended == report.sent
    assert len(report.samples) >= 6
    services = {"processor", "tool-worker", "model-worker", "approval-timer", "projector"}
    for sample in report.samples:
        assert set(sample.rss_mb) == services and all(sample.rss_mb.values())
    assert {m.service for m in report.memory} == services


def test_the_memory_verdict_tells_growth_from_noise() -> None:
    noisy = [(t, 100.0 + (1.5 if t % 2 else -1.5)) for t in range(0, 300, 10)]
    leaking = [(t, 100.0 + t * 0.2) for t in range(0, 300, 10)]  # 12 MB a minute
    assert verdict("a", noisy).flat
    grown = verdict("b", leaking)
    assert not grown.flat and round(grown.slope_mb_per_min) == 12
