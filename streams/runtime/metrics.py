"""Every Prometheus metric agentstream exports, in one place.

One process runs one service, so the metrics live in prometheus-client's default registry and a
``service`` label tells the processor, the workers, the timer and the projector apart when
several share a scrape target. Hot paths count per batch (``count_batch``), not per event: a
labelled ``inc`` takes a lock, a ``Counter`` of (topic, type) per batch does not.

Cardinality: topics, event types, tools, providers and error classes are bounded by the code
and the agent specs; tenants are bounded by the deployment. Agents are not: token counters carry
the agent only when ``AGENTSTREAM_METRICS_AGENT_LABEL=true`` (otherwise the label is ``""``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from agentstream.streams.runtime.logs import get_logger

__all__ = [
    "APPROVALS_EXPIRED",
    "BATCH_SECONDS",
    "BREAKER_STATE",
    "CALL_RETRIES",
    "CALL_SECONDS",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "EVENTS_CONSUMED",
    "EVENTS_PRODUCED",
    "INGRESS_REQUESTS",
    "PROJECTOR_BATCH_EVENTS",
    "PROJECTOR_COMMIT_SECONDS",
    "TOKENS",
    "TRANSITION_SECONDS",
    "count_batch",
    "count_tokens",
    "lag_from_statistics",
    "lag_reporting",
    "observe_call",
    "partition_lags",
    "set_breakers",
    "use_agent_label",
]

#: Call latencies: tools and models answer in milliseconds to minutes.
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: Per-event work of the state machine: microseconds.
_TRANSITION_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1)
_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SIZE_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 50000)

EVENTS_CONSUMED = Counter(
    "agentstream_events_consumed",
    "Records consumed and decoded, by topic and event type",
    ["service", "topic", "type"],
)
EVENTS_PRODUCED = Counter(
    "agentstream_events_produced",
    "Events produced and acknowledged by the broker, by topic and event type",
    ["service", "topic", "type"],
)
CONSUMER_LAG = Gauge(
    "agentstream_consumer_lag",
    "Records between the consumer's position and the partition's high watermark",
    ["service", "topic", "partition"],
)
TRANSITION_SECONDS = Histogram(
    "agentstream_transition_seconds",
    "State machine time per event (decode and transition), averaged over each batch and "
    "observed once per batch",
    ["service"],
    buckets=_TRANSITION_BUCKETS,
)
BATCH_SECONDS = Histogram(
    "agentstream_batch_seconds",
    "Wall time of one processor batch, from consume to committed offsets",
    ["service"],
    buckets=_BATCH_BUCKETS,
)
CALL_SECONDS = Histogram(
    "agentstream_call_seconds",
    "Tool and model call latency (all attempts), by outcome",
    ["kind", "name", "outcome"],
    buckets=_CALL_BUCKETS,
)
CALL_RETRIES = Counter(
    "agentstream_call_retries",
    "Attempts beyond the first, per tool or model provider",
    ["kind", "name"],
)
BREAKER_STATE = Gauge(
    "agentstream_breaker_state",
    "Circuit breaker state per tool or provider: 0 closed, 1 half open, 2 open",
    ["kind", "name"],
)
TOKENS = Counter(
    "agentstream_tokens",
    "Model tokens used, per tenant (and agent, when enabled)",
    ["tenant", "agent", "kind"],
)
DEAD_LETTERS = Counter(
    "agentstream_dead_letters",
    "Records sent to the dead-letter topic, by error class",
    ["service", "error_class"],
)
APPROVALS_EXPIRED = Counter(
    "agentstream_approvals_expired", "ApprovalExpired events sent by the timer", []
)
PROJECTOR_BATCH_EVENTS = Histogram(
    "agentstream_projector_batch_events",
    "Events per projector batch written to PostgreSQL",
    [],
    buckets=_SIZE_BUCKETS,
)
PROJECTOR_COMMIT_SECONDS = Histogram(
    "agentstream_projector_commit_seconds",
    "Time to write and commit one projector batch in PostgreSQL",
    [],
    buckets=_BATCH_BUCKETS,
)
INGRESS_REQUESTS = Counter(
    "agentstream_ingress_requests",
    "HTTP ingress requests by answer status",
    ["status"],
)

_BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
_agent_label = False


def use_agent_label(enabled: bool) -> None:
    """Label token counters with the agent id too (unbounded: one series per agent)."""
    global _agent_label
    _agent_label = enabled


def count_batch(counter: Counter, service: str, tally: Mapping[tuple[str, str], int]) -> None:
    """Add a batch's (topic, type) tally to ``counter``: one labelled ``inc`` per pair."""
    for (topic, type_name), n in tally.items():
        counter.labels(service, topic, type_name).inc(n)


def observe_call(kind: str, name: str, outcome: str, seconds: float, attempts: int) -> None:
    CALL_SECONDS.labels(kind, name, outcome).observe(seconds)
    if attempts > 1:
        CALL_RETRIES.labels(kind, name).inc(attempts - 1)


def set_breakers(kind: str, states: Mapping[str, str]) -> None:
    for name, state in states.items():
        BREAKER_STATE.labels(kind, name).set(_BREAKER_VALUES.get(state, -1.0))


def count_tokens(tenant: str, agent: str, prompt: int, completion: int) -> None:
    label = agent if _agent_label else ""
    if prompt:
        TOKENS.labels(tenant, label, "prompt").inc(prompt)
    if completion:
        TOKENS.labels(tenant, label, "completion").inc(completion)


def lag_from_statistics(
    service: str, on_lag: Callable[[dict[tuple[str, int], int]], None] | None = None
) -> Callable[[str], None]:
    """A librdkafka ``stats_cb``: sets the lag gauge of every assigned partition from the
    client's statistics (emitted every ``statistics.interval.ms``, on the polling thread)."""

    def handle(raw: str) -> None:
        try:
            lags = partition_lags(json.loads(raw))
        except (ValueError, TypeError, AttributeError) as exc:
            get_logger(__name__).debug("statistics_unreadable", error=str(exc))
            return
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(service, topic, str(partition)).set(lag)
        if on_lag is not None:
            on_lag(lags)

    return handle


def lag_reporting(
    service: str, on_lag: Callable[[dict[tuple[str, int], int]], None] | None = None
) -> dict[str, Any]:
    """Consumer settings that export the lag of every assigned partition every 2 s (for
    ``/metrics`` and readiness), parsed on the polling thread."""
    return {"statistics.interval.ms": 2000, "stats_cb": lag_from_statistics(service, on_lag)}


def partition_lags(stats: Mapping[str, object]) -> dict[tuple[str, int], int]:
    """Lag per assigned partition from librdkafka statistics: high watermark minus the next
    offset the application will see (or the committed one before the first fetch)."""
    lags: dict[tuple[str, int], int] = {}
    topics = stats.get("topics")
    if not isinstance(topics, dict):
        return lags
    for topic, info in topics.items():
        partitions = info.get("partitions", {}) if isinstance(info, dict) else {}
        for number, p in partitions.items():
            if number == "-1" or not isinstance(p, dict) or p.get("fetch_state") == "none":
                continue
            high = int(p.get("hi_offset", -1))
            position = _first_known(p.get("app_offset"), p.get("committed_offset"))
            if position is None and high == int(p.get("lo_offset", -1)):
                position = high  # an empty partition: nothing to lag behind
            if high >= 0 and position is not None:
                lags[(topic, int(number))] = max(0, high - position)
    return lags


def _first_known(*offsets: object) -> int | None:
    for offset in offsets:
        if isinstance(offset, int) and offset >= 0:
            return offset
    return None
