"""The closed sets of reasons the contract carries as text: why a record was dead-lettered
(``DeadLetter.error_class``) and why a run failed (``RunFailed.error_class``). Members are
strings, so they go on the wire as they always did; code compares members, never substrings."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DeadLetterReason", "RunFailure"]


class DeadLetterReason(StrEnum):
    """Why a record was not applied and went to the dead-letter topic."""

    # The bytes: not a record of the contract (the serde).
    TRUNCATED = "truncated"
    WRONG_MAGIC_BYTE = "wrong_magic_byte"
    MISSING_VALUE = "missing_value"
    UNKNOWN_SCHEMA_ID = "unknown_schema_id"
    UNKNOWN_RECORD_TYPE = "unknown_record_type"
    UNDECODABLE = "undecodable"
    INVALID_EVENT = "invalid_event"
    # The placement: a record of the contract in the wrong place (admission).
    WRONG_TOPIC = "wrong_topic"
    MISSING_KEY = "missing_key"
    INVALID_KEY = "invalid_key"
    KEY_MISMATCH = "key_mismatch"
    CLOCK_AHEAD = "clock_ahead"
    # The state machine: an event that does not fit the agent's state.
    WRONG_AGENT = "wrong_agent"
    NOT_AN_INPUT = "not_an_input"
    UNSUPPORTED_EVENT = "unsupported_event"
    UNKNOWN_RUN = "unknown_run"
    UNKNOWN_CALL = "unknown_call"
    FINISHED_CALL = "finished_call"
    NOT_REQUESTED = "not_requested"
    APPROVAL_NOT_PENDING = "approval_not_pending"
    APPROVAL_HASH_MISMATCH = "approval_hash_mismatch"
    APPROVAL_NOT_EXPIRED = "approval_not_expired"
    APPROVAL_EXPIRED = "approval_expired"
    CALLBACK_NOT_PENDING = "callback_not_pending"
    TIMER_NOT_DUE = "timer_not_due"
    MEMORY_REFUSED = "memory_refused"
    UNKNOWN_KIND = "unknown_kind"
    KIND_MISMATCH = "kind_mismatch"
    # The processor: applying the event would make a state no broker stores.
    STATE_TOO_LARGE = "state_too_large"
    # The projector: a valid event its database refused.
    UNWRITABLE = "unwritable"


class RunFailure(StrEnum):
    """Why the state machine ended a run as failed."""

    DEADLINE_EXCEEDED = "deadline_exceeded"
    BUDGET_EXCEEDED = "budget_exceeded"
    MODEL_FAILED = "model_failed"
    TOOL_FAILED = "tool_failed"
    CALLBACK_TIMED_OUT = "callback_timed_out"
    SPEC_VERSION_UNAVAILABLE = "spec_version_unavailable"
    DELEGATION_REFUSED = "delegation_refused"
