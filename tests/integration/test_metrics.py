"""A processor's /metrics, /healthz and /readyz after a workload on the real broker: every
counter equals what the topics hold."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from builders import agent_input
from console_support import read_with_headers, wait_until
from harness import FakeWorkers, ServiceProcess, TopicCollector, outcomes_by_agent
from prometheus_client.parser import text_string_to_metric_families

from agentstream.processors.engine.loop import PROCESSOR_INPUTS
from agentstream.schemas.events import Event
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import (
    APPROVAL_REQUESTS,
    DLQ,
    INPUTS,
    MODEL_CALLS,
    OUTCOMES,
    TOOL_CALLS,
    TopicSpec,
    ensure_topics,
)
from agentstream.tools.devstack.stack_process import free_loopback_port

pytestmark = pytest.mark.integration

AGENTS = 24
GARBAGE = 3
OUTPUTS = [MODEL_CALLS, TOOL_CALLS, APPROVAL_REQUESTS, OUTCOMES]


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def by_topic_and_type(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> Counter[tuple[str, str]]:
    tally: Counter[tuple[str, str]] = Counter()
    for (sample, labels), value in values.items():
        if sample == name:
            label = dict(labels)
            assert label["service"] == "processor"
            tally[(label["topic"], label["type"])] += int(value)
    return tally


def on_topics(settings: Settings, specs: list[TopicSpec]) -> Counter[tuple[str, str]]:
    tally: Counter[tuple[str, str]] = Counter()
    for spec in specs:
        for record, _headers in read_with_headers(settings, [spec]):
            assert isinstance(record, Event)
            tally[(settings.topic(spec.name), type(record).__name__)] += 1
    return tally


def test_processor_metrics_match_the_events_on_the_topics(
    settings: Settings, tmp_path: Path
) -> None:
    isolated = settings.model_copy(update={"topic_prefix": f"m{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    port = free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    args = ["processor", "run", "--spec", "world:support_spec", "--metrics-port", str(port)]
    texts = ["where is my order", "refund please", "hello"]
    with (
        TopicCollector(isolated, [OUTCOMES]) as outcomes,
        FakeWorkers(isolated),
        ServiceProcess(args, isolated, tmp_path, "processor") as processor,
    ):
        processor.wait_for_log("metrics_listening")
        assert httpx.get(f"{url}/healthz", timeout=10).json()["alive"] is True
        processor.wait_for_log("partitions_restored")
        with AgentStreamProducer(isolated) as producer:
            for i in range(AGENTS):
                producer.send(agent_input(f"metrics-{i:03d}", texts[i % 3]))
            for i in range(GARBAGE):
                producer.produce_raw(
                    isolated.topic(INPUTS.name), f"metrics-{i:03d}".encode(), b"not avro", None
                )
        outcomes.wait_for(lambda r: len(outcomes_by_agent(r)) >= AGENTS, timeout=90)

        consumed_on_topics = on_topics(isolated, list(PROCESSOR_INPUTS))
        produced_on_topics = on_topics(isolated, OUTPUTS)
        assert consumed_on_topics[(isolated.topic(INPUTS.name), "AgentInput")] == AGENTS
        assert produced_on_topics[(isolated.topic(OUTCOMES.name), "RunCompleted")] == AGENTS

        def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            # The counters move after each batch's offsets are committed, just after its
            # outputs became visible.
            values = samples(url)
            consumed = by_topic_and_type(values, "agentstream_events_consumed_total")
            produced = by_topic_and_type(values, "agentstream_events_produced_total")
            same = consumed == consumed_on_topics and produced == produced_on_topics
            return values if same else None

        values = wait_until("counters equal to the topics", settled, timeout=30)
        dead = {
            dict(labels)["error_class"]: value
            for (name, labels), value in values.items()
            if name == "agentstream_dead_letters_total"
        }
        assert sum(dead.values()) == GARBAGE, dead
        assert len(read_with_headers(isolated, [DLQ])) == GARBAGE
        transitions = values[("agentstream_transition_seconds_count", (("service", "processor"),))]
        assert 1 <= transitions <= sum(consumed_on_topics.values()) + GARBAGE

        ready = wait_until(
            "the processor to report ready and caught up",
            lambda: (r := httpx.get(f"{url}/readyz", timeout=10)).status_code == 200 and r,
        )
        assert ready.json() == {
            "service": "processor",
            "ready": True,
            "assigned": True,
            "restored": True,
            "caught_up": True,
        }
        lags = {
            dict(labels)["partition"]: value
            for (name, labels), value in samples(url).items()
            if name == "agentstream_consumer_lag"
            and dict(labels)["topic"] == isolated.topic(INPUTS.name)
        }
        assert set(lags) == {str(p) for p in range(isolated.partitions)}
        assert all(lag == 0 for lag in lags.values()), lags
        assert processor.terminate() == 0, processor.log_tail()
