"""The topic and key checks every consumer of agent events makes (pure: no broker)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE

from agentstream.schemas.events import AgentInput, AgentStateSnapshot, AvroRecord, ToolCallCompleted
from agentstream.streams.admission import MAX_CLOCK_AHEAD, Refused, check_clock, check_placement
from tests.support.builders import agent_input

INPUTS: tuple[type[AvroRecord], ...] = (AgentInput,)


def _refusal(
    record: AvroRecord, key: bytes | None, carried: tuple[type[AvroRecord], ...] = INPUTS
) -> Refused:
    with pytest.raises(Refused) as caught:
        check_placement(record, "agent.inputs", carried, key)
    return caught.value


def test_an_event_of_its_topic_keyed_by_its_agent_passes() -> None:
    check_placement(agent_input("agent-7"), "agent.inputs", INPUTS, b"agent-7")


def test_a_type_the_topic_does_not_carry_is_wrong_topic() -> None:
    refused = _refusal(agent_input("agent-7"), b"agent-7", (ToolCallCompleted,))
    assert refused.error_class == "wrong_topic"
    assert str(refused) == "AgentInput does not belong on agent.inputs"
    assert refused.event is not None and refused.event.envelope.agent_id == "agent-7"


@pytest.mark.parametrize("key", [None, b""])
def test_an_agent_event_without_a_key_is_missing_key(key: bytes | None) -> None:
    refused = _refusal(agent_input("agent-7"), key)
    assert refused.error_class == "missing_key"
    assert "agent-7" in str(refused)


@pytest.mark.parametrize("key", [b"agent-8", b"agent-7 ", b"AGENT-7"])
def test_an_agent_event_under_another_key_is_key_mismatch(key: bytes) -> None:
    refused = _refusal(agent_input("agent-7"), key)
    assert refused.error_class == "key_mismatch"
    assert str(refused).endswith("is not the agent_id 'agent-7'")


def test_records_that_are_not_agent_events_need_no_key() -> None:
    snapshot = AgentStateSnapshot(
        agent_id="agent-7",
        tenant_id="t",
        version=1,
        last_event_id=None,
        state_json="{}",
        updated_at=agent_input().envelope.occurred_at,
        outbox=[],
    )
    check_placement(snapshot, "agent.state", (AgentStateSnapshot,), None)


def test_a_key_that_is_not_utf8_is_invalid_key() -> None:
    assert _refusal(agent_input("agent-7"), b"\xff\xfe").error_class == "invalid_key"


def _stamped(seconds_ahead: float) -> tuple[AgentInput, tuple[int, int]]:
    event = agent_input("agent-7")
    produced = event.envelope.occurred_at - timedelta(seconds=seconds_ahead)
    return event, (TIMESTAMP_CREATE_TIME, int(produced.timestamp() * 1000))


def test_an_event_stamped_ahead_of_its_record_is_refused_with_the_skew() -> None:
    event, timestamp = _stamped(3600)
    with pytest.raises(Refused) as caught:
        check_clock(event, timestamp)
    assert caught.value.error_class == "clock_ahead"
    assert "3,600 s after the record was produced" in str(caught.value)


def test_small_skews_and_past_stamps_and_missing_timestamps_pass() -> None:
    for seconds in (-86_400, 0, MAX_CLOCK_AHEAD.total_seconds() - 1):
        check_clock(*_stamped(seconds))
    check_clock(agent_input("agent-7"), (TIMESTAMP_NOT_AVAILABLE, 0))
