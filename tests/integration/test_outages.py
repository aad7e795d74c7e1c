"""Outages beside the ones proven elsewhere: a tool endpoint that hangs.

Also proven, by other tests: PostgreSQL down for a while (test_projector.py, the projector
pauses and catches up without loss), the processor SIGKILLed under load and restored
(test_processor.py, and every service in test_chaos.py).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bad_inputs import now_input
from harness import ServiceProcess, TopicCollector

from agentstream.schemas.events import RunCompleted, RunFailed, ToolCallFailed
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import OUTCOMES, TOOL_RESULTS, ensure_topics

pytestmark = pytest.mark.integration
SPEC = "chaos_support:outage_spec"
THRESHOLD = 3


@pytest.fixture
def services(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, list[ServiceProcess]]]:
    prefix = f"out{uuid.uuid4().hex[:6]}."
    isolated = settings.model_copy(update={"topic_prefix": prefix})
    ensure_topics(isolated)

    def service(name: str, *args: str) -> ServiceProcess:
        return ServiceProcess([*args, "--group", f"{prefix}{name}"], isolated, tmp_path, name)

    running = [
        service("processor", "processor", "run", "--spec", SPEC),
        service("models", "worker", "models", "run"),
        service(
            "tools",
            *("worker", "tools", "run", "--spec", SPEC, "--concurrency", "4"),
            *("--breaker-threshold", str(THRESHOLD), "--breaker-cooldown", "120"),
        ),
    ]
    try:
        for process in running:
            process.start()
        for process, marker in zip(
            running, ["processor_started", "worker_started", "worker_started"], strict=True
        ):
            process.wait_for_log(marker)
        yield isolated, running
        for process in running:
            assert process.terminate() == 0, process.log_tail()
    finally:
        for process in running:
            process.kill()


def _outcomes(records: list[object]) -> dict[str, RunCompleted | RunFailed]:
    return {r.envelope.agent_id: r for r in records if isinstance(r, RunCompleted | RunFailed)}


def test_a_hanging_tool_times_out_opens_its_breaker_and_the_worker_serves_others(
    services: tuple[Settings, list[ServiceProcess]],
) -> None:
    settings, (processor, _, tools) = services
    hanging = [f"hang-{i}" for i in range(6)]
    quick = [f"quick-{i}" for i in range(12)]
    with TopicCollector(settings, [OUTCOMES, TOOL_RESULTS]) as records:
        with AgentStreamProducer(settings) as producer:
            # four hang at once (the worker's concurrency), with quick calls around them
            for n, agent in enumerate(hanging[:4]):
                producer.send(now_input(agent, f"please hang item{n}"))
                producer.send(now_input(quick[2 * n], f"quick item{n}"))
                producer.send(now_input(quick[2 * n + 1], f"quick other{n}"))
            tools.wait_for_log('"new": "open"', timeout=30)
            # once the breaker is open, calls to the hanging tool fail at once
            for n, agent in enumerate(hanging[4:], start=4):
                producer.send(now_input(agent, f"please hang item{n}"))
                producer.send(now_input(quick[2 * n], f"quick item{n}"))
                producer.send(now_input(quick[2 * n + 1], f"quick other{n}"))
        wanted = set(hanging) | set(quick)
        found = records.wait_for(lambda r: wanted <= set(_outcomes(r)), timeout=60)
    outcomes = _outcomes(found)
    assert wanted <= set(outcomes), f"missing {wanted - set(outcomes)}\n{tools.log_tail()}"
    for agent in quick:
        assert isinstance(outcomes[agent], RunCompleted), outcomes[agent]
    for agent in hanging:
        outcome = outcomes[agent]
        assert isinstance(outcome, RunFailed) and outcome.error_class == "tool_failed", outcome
        assert "hanging_lookup" in outcome.reason, outcome.reason
    failures = {
        r.envelope.agent_id: r
        for r in found
        if isinstance(r, ToolCallFailed) and r.envelope.agent_id in hanging
    }
    assert set(failures) == set(hanging)
    timed_out = [a for a in hanging[:4] if "took longer than 0.5s" in failures[a].error_message]
    assert len(timed_out) >= THRESHOLD, {a: failures[a].error_message for a in hanging[:4]}
    for agent in hanging[4:]:
        assert (failures[agent].attempts, failures[agent].error_class) == (0, "CircuitOpenError")
    # the breaker opened once and stayed open (cool-down 120 s); the worker never restarted
    changes = [
        (line["old"], line["new"])
        for line in _json_logs(tools)
        if line.get("event") == "breaker_state_changed" and line.get("breaker") == "hanging_lookup"
    ]
    assert changes == [("closed", "open")], changes
    assert tools.alive() and tools.starts == 1 and processor.alive()


def _json_logs(process: ServiceProcess) -> list[dict[str, Any]]:
    lines = process.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]
