"""``agentstream bench`` end to end, at its smallest sizes: every stage runs and reports a figure.

Speed is not asserted here (the benchmark measures it); the JSON's shape and that every figure
and ratio is a positive number are.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FIGURES = {
    "processor_transitions_per_s",
    "faust_baseline_events_per_s",
    "processor_floor_per_s",
    "kafka_produce_per_s",
    "kafka_consume_per_s",
    "avro_encode_per_s",
    "avro_decode_per_s",
    "projector_events_per_s",
    "rebuild_events_per_s",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "latency_achieved_runs_per_s",
    "latency_completed_runs_per_s",
    "dev_up_ready_s",
    "stack_ready_s",
}
RATIOS = {
    "processor_vs_faust",
    "processor_vs_floor",
    "processor_vs_kafka_consume",
    "processor_vs_kafka_produce",
    "processor_vs_avro_decode",
    "processor_vs_avro_encode",
    "projector_vs_kafka_consume",
    "rebuild_vs_projector",
}
VERSIONS = {
    "python",
    "agentstream",
    "confluent-kafka",
    "librdkafka",
    "faust-streaming",
    "fastavro",
    "postgres",
}


def test_quick_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # The bench starts its own embedded stack: no endpoints inherited from the environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env["AGENTSTREAM_HOME"] = str(tmp_path / "home")
    argv = [sys.executable, "-m", "agentstream.tools.cli.app", "bench", "--quick"]
    argv += ["--events", "3000", "--backlog", "3000", "--faust-events", "500"]
    argv += ["--latency-seconds", "1", "--rate", "100", "--json", str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert set(report["figures"]) == FIGURES
    assert set(report["ratios"]) == RATIOS
    for name, value in {**report["figures"], **report["ratios"]}.items():
        assert isinstance(value, int | float), name
        assert math.isfinite(value) and value > 0, (name, value)
    assert set(report["versions"]) >= VERSIONS
    assert all(report["versions"][name] for name in VERSIONS)
    assert report["machine"]["cpu_count"] > 0
    assert report["machine"]["memory_bytes"] > 0
    for target in report["targets"].values():
        assert set(target) == {"target", "measured", "met"}
    assert report["sizes"]["processor_backlog"] == 3000
    assert report["details"]["latency_runs"]["runs"] == 100
    assert report["details"]["projector"]["rebuild_equal"] is True
    # the table is on the screen, naming the processor's rate and its ratio to Faust
    assert "processor" in done.stderr
    assert "Faust" in done.stderr
