"""Pydantic models mirroring the ``.avsc`` files field by field (a contract test keeps them equal).

``to_avro`` / ``from_avro`` are the seams to the Avro serde: plain dicts in the shape fastavro
writes and reads, timestamps as timezone-aware datetimes truncated to milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agentstream.schemas.contract import NAMESPACE
from agentstream.schemas.limits import MAX_INPUT_TEXT_BYTES, MAX_RESULT_BYTES, utf8_size

__all__ = [
    "EVENT_TYPES",
    "ID_PATTERN",
    "NESTED_TYPES",
    "RECORD_TYPES",
    "AgentInput",
    "AgentPaused",
    "AgentResumed",
    "AgentStateSnapshot",
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalGranted",
    "ApprovalRequested",
    "AvroRecord",
    "CallbackCompleted",
    "ChangelogMarker",
    "DeadLetter",
    "DelegationReturned",
    "DelegationStatus",
    "Envelope",
    "Event",
    "Id",
    "InputText",
    "MemoryErased",
    "MemoryRecorded",
    "Millis",
    "ModelCallCompleted",
    "ModelCallFailed",
    "ModelCallRequested",
    "OutboxRecord",
    "Payload",
    "RecordHeader",
    "RunCancelRequested",
    "RunCancelled",
    "RunCompleted",
    "RunFailed",
    "RunHandedOff",
    "RunOrigin",
    "RunOutcome",
    "RunRelation",
    "TimerFired",
    "TimerPurpose",
    "TimerSet",
    "TokenUsage",
    "ToolCallCompleted",
    "ToolCallFailed",
    "ToolCallIntent",
    "ToolCallRequested",
    "ToolCallWaiting",
]

#: Ids are opaque but printable: they become Kafka keys, Postgres keys and log fields.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$"


def _to_millis(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    if value.tzinfo is UTC and not value.microsecond % 1000:
        return value  # what every decoded and derived timestamp already is: no new object
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


Id = Annotated[str, Field(pattern=ID_PATTERN)]
Millis = Annotated[datetime, AfterValidator(_to_millis)]


def _input_text(text: str) -> str:
    size = utf8_size(text)
    if size > MAX_INPUT_TEXT_BYTES:
        raise ValueError(
            f"the text is {size:,} bytes, over the {MAX_INPUT_TEXT_BYTES:,}-byte limit of an "
            "input (keep documents out of events: send a reference)"
        )
    return text


InputText = Annotated[str, AfterValidator(_input_text)]


def _payload(text: str) -> str:
    size = utf8_size(text)
    if size > MAX_RESULT_BYTES:
        raise ValueError(
            f"the payload is {size:,} bytes, over the {MAX_RESULT_BYTES:,}-byte limit of a "
            "result (keep documents out of events: send a reference)"
        )
    return text


#: A result another system hands to a run (a callback's payload, a fact to remember): as bounded
#: as a tool's result, for the same reason.
Payload = Annotated[str, AfterValidator(_payload)]


class TimerPurpose(StrEnum):
    """What a durable timer ends: a sleep of the run, or the wait for a callback."""

    SLEEP = "sleep"
    CALLBACK = "callback"
    DELEGATION = "delegation"


class RunRelation(StrEnum):
    """How another agent's run started this one."""

    DELEGATED = "delegated"
    HANDED_OFF = "handed_off"


class DelegationStatus(StrEnum):
    """How a delegated run answered the run that delegated to it."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"


class AvroRecord(BaseModel):
    """A value of one named Avro record type of the contract."""

    # bytes (dead letters, outboxes) are rarely UTF-8: base64 in JSON, both ways
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )

    avro_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.avro_name = f"{NAMESPACE}.{cls.__name__}"

    def to_avro(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_avro(cls, data: dict[str, Any]) -> Self:
        return cls.model_validate(data)


class Envelope(AvroRecord):
    event_id: Id
    agent_id: Id
    tenant_id: Id
    run_id: Id | None = None
    correlation_id: Id
    causation_id: Id | None = None
    occurred_at: Millis
    source: str
    schema_version: int = 1

    def caused(self, *, event_id: str, occurred_at: datetime, source: str) -> Envelope:
        """The envelope of an event this one caused: same agent, run and correlation."""
        return Envelope(
            event_id=event_id,
            agent_id=self.agent_id,
            tenant_id=self.tenant_id,
            run_id=self.run_id,
            correlation_id=self.correlation_id,
            causation_id=self.event_id,
            occurred_at=occurred_at,
            source=source,
        )


class TokenUsage(AvroRecord):
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ToolCallIntent(AvroRecord):
    tool_call_id: str
    tool: str
    arguments_json: str


class RecordHeader(AvroRecord):
    key: str
    value: bytes | None = None


class Event(AvroRecord):
    """An agent event: everything on the agent topics starts with an envelope."""

    envelope: Envelope

    @property
    def event_id(self) -> str:
        return self.envelope.event_id

    @property
    def agent_id(self) -> str:
        return self.envelope.agent_id


class RunOrigin(AvroRecord):
    """Where a run comes from when another agent's run started it (see the .avsc)."""

    relation: RunRelation
    agent_id: Id
    run_id: Id
    depth: int = Field(ge=1)
    lineage: list[str]
    reply_agent_id: Id | None = None
    reply_run_id: Id | None = None
    reply_call_id: Id | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    max_steps: int | None = Field(default=None, ge=0)
    deadline_at: Millis | None = None
    max_depth: int | None = Field(default=None, ge=0)
    carried_steps: int = Field(default=0, ge=0)
    carried_usage: TokenUsage | None = None


class AgentInput(Event):
    #: at most ``MAX_INPUT_TEXT_BYTES`` in UTF-8: a longer input is refused by every entrance
    #: (SDK, CLI and ingress say why; the processor dead-letters one from any other producer)
    text: InputText
    metadata: dict[str, str] = Field(default_factory=dict)
    #: the agent kind (spec name) serving this agent: bound on its first input
    kind: str | None = Field(default=None, min_length=1, max_length=200)
    #: the conversation handed over: messages the run starts with, before ``text``
    context_json: Payload | None = None
    origin: RunOrigin | None = None


class ModelCallRequested(Event):
    call_id: Id
    step: int = Field(ge=1)
    provider: str
    model: str
    parameters_json: str = "{}"
    system_prompt: str = ""
    messages_json: str
    tools_json: str = "[]"
    fallback_provider: str | None = None
    fallback_model: str | None = None
    #: the version of the agent's spec the run started on, and the hash of its content
    spec_version: int | None = None
    spec_hash: str | None = None


class ModelCallCompleted(Event):
    call_id: Id
    content: str | None = None
    tool_calls: list[ToolCallIntent] = Field(default_factory=list)
    usage: TokenUsage
    provider: str
    model: str
    attempts: int = Field(default=1, ge=1)
    latency_ms: int = Field(default=0, ge=0)
    fallback_used: bool = False


class ModelCallFailed(Event):
    call_id: Id
    provider: str
    model: str
    attempts: int = Field(ge=0)
    error_class: str
    error_message: str
    retryable: bool = False


class ToolCallRequested(Event):
    call_id: Id
    tool: str
    arguments_json: str
    arguments_hash: str
    timeout_ms: int = Field(default=30000, gt=0)
    max_attempts: int = Field(default=3, ge=1)


class ToolCallCompleted(Event):
    call_id: Id
    tool: str
    result_json: str
    attempts: int = Field(default=1, ge=1)
    latency_ms: int = Field(default=0, ge=0)


class ToolCallFailed(Event):
    call_id: Id
    tool: str
    attempts: int = Field(ge=0)
    error_class: str
    error_message: str
    latency_ms: int = Field(default=0, ge=0)


class ApprovalRequested(Event):
    call_id: Id
    tool: str
    arguments_json: str
    arguments_hash: str
    expires_at: Millis


class ApprovalGranted(Event):
    call_id: Id
    arguments_hash: str
    approver: str = Field(min_length=1)
    comment: str | None = None


class ApprovalDenied(Event):
    call_id: Id
    arguments_hash: str
    approver: str = Field(min_length=1)
    comment: str | None = None


class ApprovalExpired(Event):
    call_id: Id
    arguments_hash: str


class ToolCallWaiting(Event):
    """The tool started work elsewhere: the call ends when another system completes
    ``callback_id`` (a :class:`CallbackCompleted`), or fails at ``expires_at``."""

    call_id: Id
    tool: str
    callback_id: Id
    expires_at: Millis
    attempts: int = Field(default=1, ge=1)
    latency_ms: int = Field(default=0, ge=0)


class CallbackCompleted(Event):
    """Another system's answer to a waiting tool call, from Kafka, the ingress or the CLI."""

    callback_id: Id
    result_json: Payload
    completed_by: str = Field(min_length=1)


class TimerSet(Event):
    """A durable timer for the timer worker: it fires :class:`TimerFired` at ``fire_at``."""

    timer_id: Id
    call_id: Id
    purpose: TimerPurpose
    fire_at: Millis


class TimerFired(Event):
    timer_id: Id
    call_id: Id
    purpose: TimerPurpose


class RunCancelRequested(Event):
    """Cancel the run named by the envelope's run_id (the running one when it is null)."""

    requested_by: str = Field(min_length=1)
    reason: str = ""


class AgentPaused(Event):
    """From now on the agent requests nothing and starts no run, until it is resumed."""

    requested_by: str = Field(min_length=1)
    reason: str = ""


class AgentResumed(Event):
    requested_by: str = Field(min_length=1)


class MemoryRecorded(Event):
    """A fact the agent keeps across runs: written by its ``remember`` tool or by anyone else."""

    key: str = Field(min_length=1, max_length=200)
    value: Payload
    recorded_by: str = Field(min_length=1)


class MemoryErased(Event):
    """Erase one fact (``key``) or, with no key, everything the agent remembers. The erasure is
    kept; what was erased is not."""

    key: str | None = Field(default=None, min_length=1, max_length=200)
    requested_by: str = Field(min_length=1)
    reason: str = ""


class RunCompleted(Event):
    output: str
    steps: int = Field(ge=0)
    tool_calls: int = Field(ge=0)
    usage: TokenUsage
    started_at: Millis
    spec_version: int | None = None
    spec_hash: str | None = None


class RunFailed(Event):
    reason: str
    error_class: str
    steps: int = Field(ge=0)
    tool_calls: int = Field(ge=0)
    usage: TokenUsage
    started_at: Millis
    spec_version: int | None = None
    spec_hash: str | None = None


class DelegationReturned(Event):
    """A delegated run's outcome, on the delegating agent's key: its call's result."""

    call_id: Id
    child_agent_id: Id
    child_run_id: Id
    status: DelegationStatus
    output: str | None = None
    reason: str | None = None
    steps: int = Field(ge=0)
    usage: TokenUsage


class RunHandedOff(Event):
    """The run ended by handing its conversation to another agent kind."""

    to_kind: str
    to_agent_id: Id
    to_run_id: Id
    note: str
    steps: int = Field(ge=0)
    tool_calls: int = Field(ge=0)
    usage: TokenUsage
    started_at: Millis
    spec_version: int | None = None
    spec_hash: str | None = None


class RunCancelled(Event):
    reason: str
    cancelled_by: str
    steps: int = Field(ge=0)
    tool_calls: int = Field(ge=0)
    usage: TokenUsage
    started_at: Millis
    spec_version: int | None = None
    spec_hash: str | None = None


#: How a run can end: every run gets exactly one of these, on the outcomes topic.
RunOutcome = RunCompleted | RunFailed | RunCancelled | RunHandedOff


class OutboxRecord(AvroRecord):
    topic: str
    value: bytes
    #: None: keyed by the snapshot's agent
    key: str | None = None


class AgentStateSnapshot(AvroRecord):
    agent_id: Id
    tenant_id: Id
    version: int = Field(ge=0)
    last_event_id: Id | None = None
    state_json: str
    state_format: int = 1
    updated_at: Millis
    outbox: list[OutboxRecord] = Field(default_factory=list)


class ChangelogMarker(AvroRecord):
    partition: int = Field(ge=0)
    through_offset: int
    written_at: Millis
    source: str


class DeadLetter(AvroRecord):
    dead_letter_id: str
    original_topic: str
    original_partition: int
    original_offset: int
    original_key: bytes | None = None
    original_value: bytes | None = None
    original_headers: list[RecordHeader] = Field(default_factory=list)
    reason: str
    error_class: str
    agent_id: str | None = None
    event_id: str | None = None
    failed_at: Millis
    source: str


#: Every agent event type, by its Avro full name.
EVENT_TYPES: dict[str, type[Event]] = {
    cls.avro_name: cls
    for cls in (
        AgentInput,
        ModelCallRequested,
        ModelCallCompleted,
        ModelCallFailed,
        ToolCallRequested,
        ToolCallCompleted,
        ToolCallFailed,
        ToolCallWaiting,
        ApprovalRequested,
        ApprovalGranted,
        ApprovalDenied,
        ApprovalExpired,
        RunCompleted,
        RunFailed,
        RunCancelled,
        RunHandedOff,
        DelegationReturned,
        RunCancelRequested,
        AgentPaused,
        AgentResumed,
        MemoryRecorded,
        MemoryErased,
        CallbackCompleted,
        TimerSet,
        TimerFired,
    )
}

#: Every top-level record type that is written to a topic, by its Avro full name.
RECORD_TYPES: dict[str, type[AvroRecord]] = {
    **EVENT_TYPES,
    AgentStateSnapshot.avro_name: AgentStateSnapshot,
    ChangelogMarker.avro_name: ChangelogMarker,
    DeadLetter.avro_name: DeadLetter,
}

#: Nested record types, which have their own .avsc but are never a topic's value.
NESTED_TYPES: dict[str, type[AvroRecord]] = {
    cls.avro_name: cls
    for cls in (Envelope, TokenUsage, ToolCallIntent, RecordHeader, OutboxRecord, RunOrigin)
}
