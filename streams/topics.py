"""The topic registry: one declaration per topic, and ``ensure``/``describe`` against a cluster.

Every agent topic is keyed by agent_id and co-partitioned (the same partition count and the
default partitioner), so one processor owns all of an agent's events and its state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, cast

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from agentstream.schemas.errors import ConfigurationError, ServiceUnavailableError
from agentstream.schemas.events import (
    AgentInput,
    AgentPaused,
    AgentResumed,
    AgentStateSnapshot,
    ApprovalDenied,
    ApprovalExpired,
    ApprovalGranted,
    ApprovalRequested,
    AvroRecord,
    CallbackCompleted,
    ChangelogMarker,
    DeadLetter,
    DelegationReturned,
    MemoryErased,
    MemoryRecorded,
    ModelCallCompleted,
    ModelCallFailed,
    ModelCallRequested,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunFailed,
    RunHandedOff,
    TimerFired,
    TimerSet,
    ToolCallCompleted,
    ToolCallFailed,
    ToolCallRequested,
    ToolCallWaiting,
)
from agentstream.streams.runtime.settings import Settings

__all__ = [
    "APPROVAL_DECISIONS",
    "APPROVAL_REQUESTS",
    "CONTROL",
    "DEAD_LETTERED_BY_CONSUMER",
    "DLQ",
    "FOREVER",
    "INPUTS",
    "MODEL_CALLS",
    "MODEL_RESULTS",
    "OUTCOMES",
    "STATE",
    "THIRTY_DAYS_MS",
    "TIMERS",
    "TOOL_CALLS",
    "TOOL_RESULTS",
    "TOPICS",
    "TopicSpec",
    "TopicStatus",
    "admin_client",
    "describe_topics",
    "ensure_topics",
    "topic_for",
    "verify_copartitioned",
]

FOREVER = -1
THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One logical topic: what it carries and how it is configured."""

    name: str
    value_types: tuple[type[AvroRecord], ...]
    description: str
    cleanup_policy: Literal["delete", "compact"] = "delete"
    retention_ms: int = FOREVER
    key: str = "agent_id"
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        config = {"cleanup.policy": self.cleanup_policy, **self.extra_config}
        if self.cleanup_policy == "delete":
            config["retention.ms"] = str(self.retention_ms)
        return config


INPUTS = TopicSpec("agent.inputs", (AgentInput,), "inputs from upstream systems and people")
MODEL_CALLS = TopicSpec("agent.model-calls", (ModelCallRequested,), "requests to model workers")
MODEL_RESULTS = TopicSpec(
    "agent.model-results", (ModelCallCompleted, ModelCallFailed), "results of model calls"
)
TOOL_CALLS = TopicSpec("agent.tool-calls", (ToolCallRequested,), "requests to tool workers")
TOOL_RESULTS = TopicSpec(
    "agent.tool-results",
    (ToolCallCompleted, ToolCallFailed, ToolCallWaiting, DelegationReturned),
    "results of tool calls (delegated runs' answers too), and calls that wait for another system",
)
APPROVAL_REQUESTS = TopicSpec(
    "agent.approval-requests", (ApprovalRequested,), "gated calls waiting for a person"
)
APPROVAL_DECISIONS = TopicSpec(
    "agent.approval-decisions",
    (ApprovalGranted, ApprovalDenied, ApprovalExpired),
    "decisions and expiries of approvals",
)
OUTCOMES = TopicSpec(
    "agent.outcomes",
    (RunCompleted, RunFailed, RunCancelled, RunHandedOff),
    "how each run ended",
)
CONTROL = TopicSpec(
    "agent.control",
    (
        RunCancelRequested,
        AgentPaused,
        AgentResumed,
        MemoryRecorded,
        MemoryErased,
        CallbackCompleted,
        TimerFired,
    ),
    "steering from operators and other systems: cancel, pause, memory, callbacks, fired timers",
)
TIMERS = TopicSpec("agent.timers", (TimerSet,), "durable timers for the timer worker")
STATE = TopicSpec(
    "agent.state",
    (AgentStateSnapshot, ChangelogMarker),
    "compacted changelog of agent state, with outboxes and delivery markers",
    cleanup_policy="compact",
    extra_config={"min.compaction.lag.ms": "60000"},
)
DLQ = TopicSpec(
    "agent.dlq",
    (DeadLetter,),
    "records that could not be decoded or applied",
    retention_ms=THIRTY_DAYS_MS,
)

#: Topics whose records a service consumes and dead-letters when they are bad: the processor its
#: inputs, the workers their requests. Every other reader of them (the projector) leaves a bad
#: record to that service, so it is dead-lettered once.
DEAD_LETTERED_BY_CONSUMER: tuple[TopicSpec, ...] = (
    INPUTS,
    MODEL_RESULTS,
    TOOL_RESULTS,
    APPROVAL_DECISIONS,
    CONTROL,
    MODEL_CALLS,
    TOOL_CALLS,
)

TOPICS: tuple[TopicSpec, ...] = (
    INPUTS,
    MODEL_CALLS,
    MODEL_RESULTS,
    TOOL_CALLS,
    TOOL_RESULTS,
    APPROVAL_REQUESTS,
    APPROVAL_DECISIONS,
    OUTCOMES,
    CONTROL,
    TIMERS,
    STATE,
    DLQ,
)

_BY_TYPE: dict[type[AvroRecord], TopicSpec] = {t: spec for spec in TOPICS for t in spec.value_types}


def topic_for(record_type: type[AvroRecord]) -> TopicSpec:
    """The one topic a record type is written to."""
    try:
        return _BY_TYPE[record_type]
    except KeyError:
        raise ConfigurationError(f"no topic carries {record_type.__name__}") from None


@dataclass(frozen=True)
class TopicStatus:
    spec: TopicSpec
    physical_name: str
    partitions: int | None
    action: Literal["created", "exists", "missing"]


def admin_client(settings: Settings) -> AdminClient:
    """An admin client on ``settings``' cluster, its log lines routed as every client's."""
    # confluent-kafka's stubs leave out the ``logger`` key, which AdminClient takes as the others.
    return AdminClient(cast("dict[str, str | int | float | bool]", settings.kafka_config()))


def describe_topics(settings: Settings, timeout: float = 15.0) -> list[TopicStatus]:
    """Each declared topic with its partition count on the cluster (None when missing)."""
    try:
        metadata = admin_client(settings).list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ServiceUnavailableError(
            f"cannot reach the Kafka cluster at {settings.bootstrap_servers}: {exc}",
            hint="check AGENTSTREAM_BOOTSTRAP_SERVERS, or start `agentstream dev up`",
        ) from exc
    statuses = []
    for spec in TOPICS:
        name = settings.topic(spec.name)
        found = metadata.topics.get(name)
        if found is None or found.error is not None:
            statuses.append(TopicStatus(spec, name, None, "missing"))
        else:
            statuses.append(TopicStatus(spec, name, len(found.partitions), "exists"))
    return statuses


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[TopicStatus]:
    """Create missing topics; verify that all agent topics are co-partitioned."""
    statuses = describe_topics(settings, timeout)
    missing = [s for s in statuses if s.action == "missing"]
    if missing:
        new = [
            NewTopic(
                s.physical_name,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                config=s.spec.config(),
            )
            for s in missing
        ]
        admin = admin_client(settings)  # must outlive its futures, or they fail as destroyed
        futures = admin.create_topics(new, operation_timeout=timeout)
        for name, future in futures.items():
            try:
                future.result(timeout=timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ServiceUnavailableError(f"could not create topic {name}: {exc}") from exc
        created = {s.physical_name for s in missing}
        statuses = [
            TopicStatus(s.spec, s.physical_name, s.partitions, "created")
            if s.physical_name in created
            else s
            for s in _described_once_visible(settings, timeout)
        ]
    verify_copartitioned(statuses)
    return statuses


def _described_once_visible(settings: Settings, timeout: float) -> list[TopicStatus]:
    """Apache Kafka answers a creation before every broker's metadata shows the topic (and a
    topic created by someone else a moment ago may not show yet either): wait until all do,
    so that partition counts are compared, not gaps."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = describe_topics(settings, timeout)
        absent = [s.physical_name for s in statuses if s.partitions is None]
        if not absent:
            return statuses
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(f"created topics do not show in metadata: {absent}")
        time.sleep(0.2)


def verify_copartitioned(statuses: list[TopicStatus]) -> None:
    counts = {s.physical_name: s.partitions for s in statuses if s.spec.key == "agent_id"}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{name}={n}" for name, n in sorted(counts.items()))
        raise ConfigurationError(
            f"agent topics are not co-partitioned: {listing}",
            hint="every agent topic needs the same partition count; recreate the odd ones",
        )
