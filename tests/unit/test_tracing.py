"""Trace context in record headers: parsing, the fallback for header-less records, spans when an
exporter is configured, and the state machine's independence of all of it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from builders import agent_input
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from world import support_spec

from agentstream.processors.core.machine import transition
from agentstream.streams.runtime import tracing

PARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_traceparent_is_found_among_headers_in_any_form() -> None:
    assert tracing.traceparent_of([("x", b"1"), ("traceparent", PARENT)]) == PARENT
    assert tracing.traceparent_of([("traceparent", PARENT.decode())]) == PARENT
    assert tracing.traceparent_of({"traceparent": PARENT}) == PARENT
    assert tracing.traceparent_of(None) is None
    assert tracing.traceparent_of([("traceparent", b"00-zz-11-01")]) is None
    assert tracing.traceparent_of([("traceparent", b"01" + PARENT[2:])]) is None
    assert tracing.traceparent_of([("traceparent", None)]) is None
    assert tracing.parse(PARENT.decode()) == PARENT
    assert tracing.parse("garbage") is None
    assert tracing.trace_id_of(PARENT) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert tracing.trace_id_of(None) is None


def test_header_less_records_fall_back_to_the_runs_trace() -> None:
    derived = tracing.derived_traceparent("run-1")
    assert derived == tracing.derived_traceparent("run-1") != tracing.derived_traceparent("run-2")
    assert tracing.traceparent_of([("traceparent", derived)]) == derived  # a valid context

    memory = tracing.TraceMemory(size=2)
    assert memory.resolve("run-1", None) == derived
    assert memory.resolve("run-1", PARENT) == PARENT
    assert memory.resolve("run-1", None) == PARENT  # a decision typed by a person
    memory.resolve("run-2", PARENT)
    memory.resolve("run-3", PARENT)  # over the bound: forgets, then falls back
    assert memory.resolve("run-1", None) == derived


def test_without_an_exporter_the_context_passes_through_untouched() -> None:
    assert not tracing.enabled()
    assert tracing.child_span("ModelCallRequested", PARENT) == PARENT
    assert tracing.setup_tracing("test") is False  # no OTEL_* variables here


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer", provider.get_tracer)
    monkeypatch.setattr(tracing, "_enabled", True)
    yield exporter
    provider.shutdown()


def test_with_an_exporter_each_hop_is_a_child_span_of_the_same_trace(
    exported: InMemorySpanExporter,
) -> None:
    first = tracing.child_span("ModelCallRequested", PARENT, {"agent_id": "a1"})
    second = tracing.child_span("ModelCallCompleted", first)
    assert tracing.trace_id_of(first) == tracing.trace_id_of(second) == tracing.trace_id_of(PARENT)
    assert len({PARENT, first, second}) == 3
    spans = exported.get_finished_spans()
    assert [s.name for s in spans] == ["ModelCallRequested", "ModelCallCompleted"]
    assert spans[0].parent is not None and spans[0].parent.span_id == int(PARENT[36:52], 16)
    assert spans[1].parent is not None and spans[1].parent.span_id == spans[0].context.span_id


def test_the_state_machine_never_sees_trace_context() -> None:
    """Replay feeds the machine events alone; the same event gives the same outputs whatever
    headers it travelled with, because the machine has no way to receive them."""
    spec = support_spec()
    event = agent_input("agent-trace", "where is my order")
    first, second = transition(None, event, spec), transition(None, event, spec)
    assert first.emits == second.emits
    assert "traceparent" not in first.state.to_json()
