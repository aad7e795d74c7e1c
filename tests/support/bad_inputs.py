"""The bad-input corpus: what a hostile or careless producer sends to each entry point, and what
agentstream must answer. Data only; tests/integration/test_bad_input_corpus.py throws it.

- ``TopicCase``: bytes put straight on a topic. ``readers`` maps each service that must
  dead-letter the record to the error class it must give; an empty map means the record is
  valid there and must be ignored (a duplicate) or applied. ``followups`` are dead letters the
  record's consequences may cause (a worker's result for a forged request), matched by agent.
- ``EventCase``: valid events with odd content; the agent's run must end as ``outcome``.
- ``SdkCase``: a call of the Python SDK that must raise ``error`` mentioning ``message``.
- ``CliCase``: an ``agentstream`` command that must exit 1 with one ``error:`` line.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from builders import agent_input, envelope

from agentstream.processors.control.approvals import ApprovalsClient, decide, expire
from agentstream.processors.core.ids import arguments_hash
from agentstream.processors.core.machine import transition
from agentstream.processors.core.spec import AgentSpec
from agentstream.schemas.errors import AgentStreamError, SerializationError
from agentstream.schemas.events import (
    AgentInput,
    ApprovalRequested,
    Event,
    ModelCallCompleted,
    ModelCallRequested,
    RunCompleted,
    TokenUsage,
    ToolCallCompleted,
    ToolCallIntent,
    ToolCallRequested,
)
from agentstream.streams.producer import AgentStreamProducer
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import (
    APPROVAL_DECISIONS,
    APPROVAL_REQUESTS,
    INPUTS,
    MODEL_CALLS,
    MODEL_RESULTS,
    TOOL_CALLS,
    TOOL_RESULTS,
    TopicSpec,
)
from agentstream.tools.harness.chaos_workload import stamped_now

SQL_TEXT = 'Robert\'); DROP TABLE agents; -- and "runs" too; SELECT pg_sleep(30);'
NUL_TEXT = "before\x00after, where is o-1001?"
DEEP = 100_000  # deeper than Python's JSON parser can go
PROCESSOR_READS = "processor"
PROJECTOR = "projector"


@dataclass
class Context:
    """What the cases are built from: a live run waiting for an approval, and its parts."""

    settings: Settings
    producer: AgentStreamProducer
    spec: AgentSpec
    #: the pending approval request of the victim agent's run
    request: ApprovalRequested
    #: the completed lookup of that run (its call is finished)
    lookup: ToolCallCompleted

    def encode(self, record: Event, topic: TopicSpec) -> bytes:
        return self.producer.serde.encode(self.settings.topic(topic.name), record)

    def good_input(self, agent: str, text: str = "hello") -> bytes:
        return self.encode(now_input(agent, text), INPUTS)


Raw = tuple[bytes | None, bytes | None]


@dataclass(frozen=True)
class TopicCase:
    kind: str
    topic: TopicSpec
    build: Callable[[Context], Raw]
    readers: dict[str, str]
    followups: frozenset[str] = frozenset()
    #: the agent of any follow-up dead letter
    agent: str | None = None


@dataclass(frozen=True)
class EventCase:
    kind: str
    agent: str
    build: Callable[[Context], list[Event]]
    #: "RunCompleted", or "RunFailed:<error_class>"
    outcome: str
    #: dead letters the case's events may cause in the processor (by agent)
    followups: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SdkCase:
    kind: str
    call: Callable[[Context], object]
    error: type[Exception]
    message: str


@dataclass(frozen=True)
class CliCase:
    kind: str
    args: Callable[[Context], list[str]]
    message: str
    stdin: str = ""


@dataclass
class Corpus:
    topics: list[TopicCase] = field(default_factory=list)
    events: list[EventCase] = field(default_factory=list)
    sdk: list[SdkCase] = field(default_factory=list)
    cli: list[CliCase] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [c.kind for c in (*self.topics, *self.events, *self.sdk, *self.cli)]


# -- builders ----------------------------------------------------------------------------------


def now_input(agent: str, text: str, at: datetime | None = None) -> AgentInput:
    return stamped_now(agent_input(agent, text), at)


def _framed(schema_id: int, body: bytes) -> bytes:
    return struct.pack(">bI", 0, schema_id) + body


def _schema_id(value: bytes) -> int:
    return int(struct.unpack(">bI", value[:5])[1])


def _result_for(ctx: Context, agent: str, call_id: str, run_id: str | None) -> ToolCallCompleted:
    return ToolCallCompleted(
        envelope=envelope(agent, run_id=run_id, occurred_at=datetime.now(UTC)),
        call_id=call_id,
        tool="lookup_order",
        result_json='{"found": false}',
    )


def _victim_result(ctx: Context, call_id: str) -> Raw:
    agent = ctx.request.envelope.agent_id
    event = _result_for(ctx, agent, call_id, ctx.request.envelope.run_id)
    return agent.encode(), ctx.encode(event, TOOL_RESULTS)


def _invalid_utf8(ctx: Context) -> Raw:
    value = ctx.good_input("bad-utf8", "XYXYXY")
    return b"bad-utf8", value.replace(b"XYXYXY", b"\xff\xfe\xc3\x28\xa0\xa1")


def _invalid_event(ctx: Context) -> Raw:
    event = AgentInput.model_construct(
        envelope=envelope("x").model_copy(update={"agent_id": "has space"}), text="hi"
    )
    return b"has space", ctx.encode(event, INPUTS)


def _forged_request(ctx: Context, agent: str, tool: str, arguments: str) -> Raw:
    request = ToolCallRequested(
        envelope=envelope(agent, run_id="r-forged", occurred_at=datetime.now(UTC)),
        call_id=f"forged-{agent}",
        tool=tool,
        arguments_json=arguments,
        arguments_hash=arguments_hash(arguments),
    )
    return agent.encode(), ctx.encode(request, TOOL_CALLS)


def _forged_model_call(ctx: Context, agent: str, provider: str, messages: str) -> Raw:
    request = ModelCallRequested(
        envelope=envelope(agent, run_id="r-forged", occurred_at=datetime.now(UTC)),
        call_id=f"forged-{agent}",
        step=1,
        provider=provider,
        model="m",
        messages_json=messages,
    )
    return agent.encode(), ctx.encode(request, MODEL_CALLS)


def _decision(ctx: Context, tag: str, **changes: object) -> Raw:
    """A grant of the victim's pending call by someone, changed as given, with its own id."""
    grant = decide(ctx.request, approve=True, approver="mallory")
    stamped = {"event_id": f"decision-{tag}"}
    if "occurred_at" in changes:
        stamped["occurred_at"] = changes.pop("occurred_at")  # type: ignore[assignment]
    grant = grant.model_copy(
        update={"envelope": grant.envelope.model_copy(update=stamped), **changes}
    )
    return grant.envelope.agent_id.encode(), ctx.encode(grant, APPROVAL_DECISIONS)


def _early_expiry(ctx: Context) -> Raw:
    forged = expire(ctx.request)
    early = forged.envelope.model_copy(
        update={"occurred_at": datetime.now(UTC), "event_id": "early-expiry-1"}
    )
    forged = forged.model_copy(update={"envelope": early})
    return forged.envelope.agent_id.encode(), ctx.encode(forged, APPROVAL_DECISIONS)


def _other_tenant(ctx: Context) -> Raw:
    agent = ctx.request.envelope.agent_id
    event = now_input(agent, "hello from elsewhere")
    event = event.model_copy(
        update={"envelope": event.envelope.model_copy(update={"tenant_id": "intruder"})}
    )
    return agent.encode(), ctx.encode(event, INPUTS)


def _model_result_for_unknown_call(ctx: Context) -> Raw:
    agent = ctx.request.envelope.agent_id
    event = ModelCallCompleted(
        envelope=envelope(agent, run_id=ctx.request.envelope.run_id, occurred_at=datetime.now(UTC)),
        call_id="no-such-model-call",
        content="hi",
        usage=TokenUsage(),
        provider="scripted",
        model="support-script",
    )
    return agent.encode(), ctx.encode(event, MODEL_RESULTS)


def _outcome_on_inputs(ctx: Context) -> Raw:
    outcome = RunCompleted(
        envelope=envelope("bad-outcome", run_id="r1"),
        output="done",
        steps=1,
        tool_calls=0,
        usage=TokenUsage(),
        started_at=datetime.now(UTC),
    )
    return b"bad-outcome", ctx.encode(outcome, INPUTS)


def _forged_model_answer(
    ctx: Context, agent: str, arguments: str, tool: str = "lookup_order"
) -> list[Event]:
    """An input, then a model answer to the call the processor will make for it (its id is
    derived, so it can be computed), asking for a tool with ``arguments``; the real model
    worker's answer comes later and is dead-lettered as an answer to a finished call."""
    first = now_input(agent, "Where is my order o-1001?")
    request = transition(None, first, ctx.spec).emits[0]
    assert isinstance(request, ModelCallRequested)
    answer = ModelCallCompleted(
        envelope=envelope(
            agent,
            run_id=request.envelope.run_id,
            causation_id=request.envelope.event_id,
            occurred_at=datetime.now(UTC),
        ),
        call_id=request.call_id,
        tool_calls=[ToolCallIntent(tool_call_id="t-1", tool=tool, arguments_json=arguments)],
        usage=TokenUsage(prompt_tokens=1, completion_tokens=1),
        provider="scripted",
        model="support-script",
    )
    return [first, answer]


def _decide_via_client(ctx: Context, call_id: str, hash_: str, approver: str = "alice") -> object:
    return ApprovalsClient(ctx.settings, ctx.producer).decide(
        call_id, approve=True, approver=approver, arguments_hash=hash_
    )


def _oversized_text(ctx: Context) -> object:
    """Built past the model's own check, as a careless caller might: send validates again."""
    big = AgentInput.model_construct(envelope=envelope("big-1"), text="x" * 1_500_000, metadata={})
    return ctx.producer.send(big)


def _oversized_metadata(ctx: Context) -> object:
    metadata = {f"k{i}": "x" * 1000 for i in range(1500)}
    return ctx.producer.send(now_input("big-2", "hi").model_copy(update={"metadata": metadata}))


def _input_over_the_text_limit(ctx: Context) -> Raw:
    """A valid record of the contract's schema whose text is over the contract's limit: what a
    producer without agentstream's SDK can write."""
    big = AgentInput.model_construct(
        envelope=now_input("bad-long", "x").envelope, text="x" * 600_000, metadata={}
    )
    return b"bad-long", ctx.encode(big, INPUTS)


# -- the corpus --------------------------------------------------------------------------------

AFTER_FORGED = frozenset({"unknown_run"})
LATE_MODEL_ANSWER = frozenset({"finished_call", "unknown_run"})


def _processor(error_class: str) -> dict[str, str]:
    """Dead-lettered by the processor, once: the projector leaves its inputs' bad records to it
    (README, "Dead letters")."""
    return {PROCESSOR_READS: error_class}


CORPUS = Corpus(
    topics=[
        TopicCase(
            "garbage_bytes",
            INPUTS,
            lambda c: (b"bad-garbage", b"\xde\xad\xbe\xef" * 8),
            _processor("wrong_magic_byte"),
        ),
        TopicCase(
            "wrong_magic_byte",
            MODEL_RESULTS,
            lambda c: (b"bad-magic", b"\x01" + c.good_input("bad-magic")[1:]),
            _processor("wrong_magic_byte"),
        ),
        TopicCase(
            "unknown_schema_id",
            TOOL_RESULTS,
            lambda c: (b"bad-schema", _framed(987_654_321, c.good_input("bad-schema")[5:])),
            _processor("unknown_schema_id"),
        ),
        TopicCase(
            "truncated_header",
            APPROVAL_DECISIONS,
            lambda c: (b"bad-trunc", b"\x00\x00"),
            _processor("truncated"),
        ),
        TopicCase(
            "undecodable_body",
            INPUTS,
            lambda c: (b"bad-body", _framed(_schema_id(c.good_input("x")), b"\xff\xff\xff\x01")),
            _processor("undecodable"),
        ),
        TopicCase(
            "empty_value",
            INPUTS,
            lambda c: (b"bad-empty", b""),
            _processor("truncated"),
        ),
        TopicCase(
            "missing_key",
            INPUTS,
            lambda c: (None, c.good_input("bad-nokey")),
            _processor("missing_key"),
        ),
        TopicCase(
            "tombstone",
            TOOL_RESULTS,
            lambda c: (b"bad-tomb", None),
            _processor("missing_value"),
        ),
        TopicCase(
            "key_mismatch",
            APPROVAL_DECISIONS,
            lambda c: (b"someone-else", _decision(c, "key")[1]),
            _processor("key_mismatch"),
        ),
        TopicCase(
            "invalid_utf8_key",
            INPUTS,
            lambda c: (b"\xff\xfe\xfd", c.good_input("bad-key")),
            _processor("invalid_key"),
        ),
        TopicCase("invalid_utf8_in_string", INPUTS, _invalid_utf8, _processor("undecodable")),
        TopicCase("invalid_event_field", INPUTS, _invalid_event, _processor("invalid_event")),
        TopicCase("wrong_type_for_topic", INPUTS, _outcome_on_inputs, _processor("wrong_topic")),
        TopicCase(
            "result_on_the_inputs_topic",
            INPUTS,
            lambda c: (
                c.lookup.envelope.agent_id.encode(),
                c.encode(
                    _result_for(c, c.lookup.envelope.agent_id, "x", c.request.envelope.run_id),
                    INPUTS,
                ),
            ),
            _processor("wrong_topic"),
        ),
        TopicCase(
            "input_on_tool_calls",
            TOOL_CALLS,
            lambda c: (b"bad-stray", c.encode(now_input("bad-stray", "hi"), TOOL_CALLS)),
            {"tool_worker": "wrong_topic"},
        ),
        TopicCase(
            "input_on_model_calls",
            MODEL_CALLS,
            lambda c: (b"bad-stray2", c.encode(now_input("bad-stray2", "hi"), MODEL_CALLS)),
            {"model_worker": "wrong_topic"},
        ),
        TopicCase(
            "garbage_approval_request",
            APPROVAL_REQUESTS,
            lambda c: (b"bad-areq", b"\x00\x7f\xff\xff\xf0garbage"),
            {PROJECTOR: "unknown_schema_id"},
        ),
        TopicCase(
            # The agent's clock is its events' time: one stamped by a clock far ahead of the
            # record's own timestamp would end runs early; it is refused instead.
            "timestamp_far_in_the_future",
            INPUTS,
            lambda c: (
                b"future-1",
                c.encode(now_input("future-1", "Where?", datetime(2999, 1, 1, tzinfo=UTC)), INPUTS),
            ),
            _processor("clock_ahead"),
        ),
        TopicCase(
            "input_text_over_the_limit",
            INPUTS,
            _input_over_the_text_limit,
            _processor("invalid_event"),
        ),
        TopicCase(
            "oversized_garbage",
            INPUTS,
            lambda c: (b"bad-huge", b"\x09" * 900_000),
            _processor("wrong_magic_byte"),
        ),
        TopicCase(
            "record_over_the_clients_size_limit",
            INPUTS,
            lambda c: (b"bad-2mb", b"\x00" + b"\xff" * 2_000_000),
            _processor("unknown_schema_id"),
        ),
        TopicCase(
            "result_for_unknown_agent",
            TOOL_RESULTS,
            lambda c: (
                b"ghost-1",
                c.encode(_result_for(c, "ghost-1", "call-x", "run-x"), TOOL_RESULTS),
            ),
            {PROCESSOR_READS: "unknown_run"},
        ),
        TopicCase(
            "result_for_unknown_call",
            TOOL_RESULTS,
            lambda c: _victim_result(c, "no-such-call"),
            {PROCESSOR_READS: "unknown_call"},
        ),
        TopicCase(
            "second_result_for_finished_call",
            TOOL_RESULTS,
            lambda c: _victim_result(c, c.lookup.call_id),
            {PROCESSOR_READS: "finished_call"},
        ),
        TopicCase(
            "duplicated_result",
            TOOL_RESULTS,
            lambda c: (c.lookup.envelope.agent_id.encode(), c.encode(c.lookup, TOOL_RESULTS)),
            {},
        ),
        TopicCase(
            "model_result_for_unknown_call",
            MODEL_RESULTS,
            _model_result_for_unknown_call,
            {PROCESSOR_READS: "unknown_call"},
        ),
        TopicCase(
            "decision_with_wrong_hash",
            APPROVAL_DECISIONS,
            lambda c: _decision(c, "hash", arguments_hash="0" * 64),
            {PROCESSOR_READS: "approval_hash_mismatch"},
        ),
        TopicCase(
            "decision_after_expiry",
            APPROVAL_DECISIONS,
            lambda c: _decision(c, "late", occurred_at=c.request.expires_at + timedelta(seconds=1)),
            # Stamped in the future: its producer's clock does not decide the expiry.
            {PROCESSOR_READS: "clock_ahead"},
        ),
        TopicCase(
            "expiry_before_deadline",
            APPROVAL_DECISIONS,
            _early_expiry,
            {PROCESSOR_READS: "approval_not_expired"},
        ),
        TopicCase(
            "decision_for_unknown_call",
            APPROVAL_DECISIONS,
            lambda c: _decision(c, "unknown", call_id="no-such-call"),
            {PROCESSOR_READS: "approval_not_pending"},
        ),
        TopicCase(
            "input_from_another_tenant",
            INPUTS,
            _other_tenant,
            {PROCESSOR_READS: "wrong_agent"},
        ),
        TopicCase(
            "forged_call_of_unknown_tool",
            TOOL_CALLS,
            lambda c: _forged_request(c, "forged-1", "rm_rf", "{}"),
            {},
            AFTER_FORGED,
            "forged-1",
        ),
        TopicCase(
            "forged_call_with_altered_arguments",
            TOOL_CALLS,
            lambda c: (
                b"forged-2",
                _forged_request(c, "forged-2", "lookup_order", '{"order_id": "o-1"}')[1].replace(
                    b"o-1", b"o-2"
                ),
            ),
            {},
            AFTER_FORGED,
            "forged-2",
        ),
        TopicCase(
            "deeply_nested_tool_arguments",
            TOOL_CALLS,
            lambda c: _forged_request(
                c, "forged-3", "lookup_order", '{"order_id":' + "[" * DEEP + "]" * DEEP + "}"
            ),
            {},
            AFTER_FORGED,
            "forged-3",
        ),
        TopicCase(
            "huge_tool_arguments",
            TOOL_CALLS,
            lambda c: _forged_request(
                c, "forged-4", "lookup_order", json.dumps({"order_id": "o" * 800_000})
            ),
            {},
            AFTER_FORGED,
            "forged-4",
        ),
        TopicCase(
            "model_call_for_unknown_provider",
            MODEL_CALLS,
            lambda c: _forged_model_call(c, "forged-5", "no-such-provider", "[]"),
            {},
            AFTER_FORGED,
            "forged-5",
        ),
        TopicCase(
            "model_call_with_garbage_messages",
            MODEL_CALLS,
            lambda c: _forged_model_call(c, "forged-6", "scripted", "{not json"),
            {},
            AFTER_FORGED,
            "forged-6",
        ),
    ],
    events=[
        EventCase(
            "sql_looking_text",
            "sql-1",
            lambda c: [now_input("sql-1", SQL_TEXT)],
            "RunCompleted",
        ),
        EventCase(
            "nul_in_text",
            "nul-1",
            lambda c: [now_input("nul-1", NUL_TEXT)],
            "RunCompleted",
        ),
        EventCase(
            "timestamp_far_in_the_past",
            "past-1",
            lambda c: [now_input("past-1", "Where is o-1001?", datetime(1971, 1, 1, tzinfo=UTC))],
            "RunFailed:deadline_exceeded",
        ),
        EventCase(
            "model_asks_for_deeply_nested_arguments",
            "nested-1",
            lambda c: _forged_model_answer(
                c, "nested-1", '{"order_id":' + "[" * DEEP + "]" * DEEP + "}"
            ),
            "RunCompleted",
            LATE_MODEL_ANSWER,
        ),
        EventCase(
            "model_asks_with_lone_surrogate",
            "surrogate-1",
            lambda c: _forged_model_answer(c, "surrogate-1", '{"order_id": "\\ud800"}'),
            "RunCompleted",
            # PostgreSQL's jsonb refuses the escaped lone surrogate in the call's arguments
            LATE_MODEL_ANSWER | {"unwritable"},
        ),
        EventCase(
            "model_asks_for_unknown_tool",
            "unknown-tool-1",
            lambda c: _forged_model_answer(c, "unknown-tool-1", "{}", tool="rm_rf"),
            "RunCompleted",
            LATE_MODEL_ANSWER,
        ),
    ],
    sdk=[
        SdkCase(
            "sdk_invalid_agent_id",
            lambda c: c.producer.send(
                AgentInput.model_construct(
                    envelope=envelope("x").model_copy(update={"agent_id": "has space"}), text="x"
                )
            ),
            SerializationError,
            "invalid AgentInput",
        ),
        SdkCase("sdk_oversized_text", _oversized_text, SerializationError, "limit of an input"),
        SdkCase("sdk_oversized_payload", _oversized_metadata, SerializationError, "byte limit"),
        SdkCase(
            "sdk_lone_surrogate_in_text",
            lambda c: c.producer.send(now_input("surrogate-2", "bad \ud800 text")),
            SerializationError,
            "surrogates",
        ),
        SdkCase(
            "sdk_approve_unknown_call",
            lambda c: _decide_via_client(c, "no-such-call", "0" * 64),
            AgentStreamError,
            "no approval request for call no-such-call",
        ),
        SdkCase(
            "sdk_approve_with_wrong_hash",
            lambda c: _decide_via_client(c, c.request.call_id, "deadbeef00"),
            AgentStreamError,
            "does not match",
        ),
        SdkCase(
            "sdk_approve_with_short_hash_prefix",
            lambda c: _decide_via_client(c, c.request.call_id, c.request.arguments_hash[:4]),
            AgentStreamError,
            "does not match",
        ),
        SdkCase(
            "sdk_approve_without_approver",
            lambda c: _decide_via_client(c, c.request.call_id, c.request.arguments_hash, "  "),
            AgentStreamError,
            "approver",
        ),
    ],
    cli=[
        CliCase(
            "cli_send_not_json",
            lambda c: ["send"],
            "stdin line 2",
            '{"agent_id":"cli-a","text":"ok"}\n{oops\n',
        ),
        CliCase(
            "cli_send_missing_field", lambda c: ["send"], "missing field", '{"agent_id":"cli-b"}\n'
        ),
        CliCase(
            "cli_send_bad_agent_id", lambda c: ["send", "--agent", "has space", "hi"], "agent_id"
        ),
        CliCase("cli_send_without_agent", lambda c: ["send", "hi"], "--agent is required"),
        CliCase(
            "cli_approve_unknown_call",
            lambda c: [
                "approvals",
                "approve",
                "nope",
                "--approver",
                "a",
                "--arguments-hash",
                "0" * 64,
            ],
            "no approval request for call nope",
        ),
        CliCase(
            "cli_deny_with_wrong_hash",
            lambda c: [
                "approvals",
                "deny",
                c.request.call_id,
                "--approver",
                "a",
                "--arguments-hash",
                "deadbeef00",
            ],
            "does not match",
        ),
    ],
)
