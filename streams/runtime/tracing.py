"""W3C trace context in Kafka record headers: one agent run is one trace.

Every record the runtime produces carries a ``traceparent`` header continuing the trace of the
record that caused it: the processor copies it from an input or result to the requests it
emits, the workers from a request to its result. The pure state machine never sees headers;
replay and dedupe do not depend on them.

A record that arrives without one (a producer that sets none, a decision typed by a person, an
outbox re-sent after a restore) gets the trace the engine last saw for its run, else one derived
from the run's ``correlation_id``. So a run that starts without a trace context still ends up in
one trace, and an upstream trace context (a ``traceparent`` on the input, or on the HTTP
ingress request) is followed from the input to the outcome.

Spans are recorded only when an exporter is configured through the standard ``OTEL_*``
variables (``OTEL_TRACES_EXPORTER=otlp`` or ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, with the
``otel`` extra installed). Otherwise nothing but the header is touched: no span objects on the
hot path.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentstream.schemas.errors import ConfigurationError
from agentstream.streams.runtime.logs import get_logger

__all__ = [
    "MEMORY_SIZE",
    "TRACEPARENT",
    "TraceMemory",
    "child_span",
    "derived_traceparent",
    "enabled",
    "parse",
    "setup_tracing",
    "shutdown_tracing",
    "trace_id_of",
    "traceparent_of",
]

TRACEPARENT = "traceparent"
_VALID = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_LENGTH = 55
_propagator = TraceContextTextMapPropagator()
_enabled = False
#: How many runs' trace contexts the engine remembers for header-less records.
MEMORY_SIZE = 100_000


def enabled() -> bool:
    """Whether spans are recorded and exported (else only headers are propagated)."""
    return _enabled


def setup_tracing(service: str) -> bool:
    """Install an OTLP exporter when the ``OTEL_*`` variables ask for one; returns whether."""
    global _enabled
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    if disabled or exporter == "none" or not (exporter == "otlp" or endpoint):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigurationError(
            "OTLP tracing is configured (OTEL_*) but the OpenTelemetry SDK is not installed",
            hint="pip install 'agentstream[otel]', or unset OTEL_TRACES_EXPORTER and "
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ) from exc
    name = os.environ.get("OTEL_SERVICE_NAME") or f"agentstream-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True
    get_logger(__name__).info("tracing_enabled", service=name, endpoint=endpoint or "default")
    return True


def shutdown_tracing() -> None:
    """Flush spans still buffered (a no-op without an exporter)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if _enabled and callable(shutdown):
        shutdown()


def traceparent_of(headers: object) -> bytes | None:
    """The valid ``traceparent`` among record headers (a list of pairs, as librdkafka and
    aiokafka hand them, or a mapping), if any. On the processor's hot path: kept cheap."""
    if not headers:
        return None
    pairs: Any = headers.items() if isinstance(headers, dict) else headers
    for key, value in pairs:
        if key == TRACEPARENT:
            raw = value.encode() if isinstance(value, str) else value
            # The shape only (a full check costs as much as the rest of it): a malformed id
            # fails later as an invalid context, and trace_id_of checks it whole.
            if isinstance(raw, bytes) and len(raw) == _LENGTH and raw[:3] == b"00-":
                return raw
    return None


def parse(value: str | bytes | None) -> bytes | None:
    """``value`` as a traceparent if it is a valid one (e.g. from an HTTP header)."""
    if value is None:
        return None
    raw = value.encode() if isinstance(value, str) else value
    return raw if _VALID.match(raw.strip()) else None


def trace_id_of(traceparent: bytes | None) -> str | None:
    match = _VALID.match(traceparent) if traceparent else None
    return match.group(1).decode() if match else None


def derived_traceparent(correlation_id: str) -> bytes:
    """The trace context of a run that came without one: a pure function of the run's
    correlation id, so every header-less record of the run lands in the same trace."""
    digest = hashlib.sha256(b"agentstream-trace/" + correlation_id.encode()).hexdigest()
    return f"00-{digest[:32]}-{digest[32:48]}-01".encode()


def child_span(name: str, parent: bytes, attributes: dict[str, str | int] | None = None) -> bytes:
    """Record a span ``name`` under ``parent`` and return the context to send on; without an
    exporter, ``parent`` itself (the trace id is all that must carry over)."""
    if not _enabled:
        return parent
    context = _propagator.extract({TRACEPARENT: parent.decode()})
    span = trace.get_tracer("agentstream").start_span(name, context=context, attributes=attributes)
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    span.end()
    return carrier.get(TRACEPARENT, parent.decode()).encode()


class TraceMemory:
    """The last trace context seen per run, for records that arrive without one; bounded (a
    forgotten run falls back to its derived context)."""

    def __init__(self, size: int = MEMORY_SIZE) -> None:
        self._size = size
        self._by_run: dict[str, bytes] = {}

    def resolve(self, correlation_id: str, header: bytes | None) -> bytes:
        if header is not None:
            if len(self._by_run) >= self._size:
                self._by_run.clear()
            self._by_run[correlation_id] = header
            return header
        return self._by_run.get(correlation_id) or derived_traceparent(correlation_id)
