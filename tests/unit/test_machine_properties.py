"""Properties of the state machine over histories the broker could deliver (hypothesis).

A simulated world answers every request; hypothesis chooses which in-flight event is delivered
next (results of parallel calls and new inputs interleave in any order) and re-delivers events
at random, as a consumer restart would.
"""

from __future__ import annotations

from builders import agent_input
from hypothesis import given, settings
from hypothesis import strategies as st
from world import respond, support_spec

from agentstream.processors.core.machine import Duplicate, Rejected, fold, transition
from agentstream.processors.core.state import AgentState
from agentstream.schemas.events import Event, RunCompleted, RunFailed

SPEC = support_spec()
texts = st.lists(st.sampled_from(["where is it", "refund please", "hi"]), min_size=1, max_size=4)


def _simulate(
    data: st.DataObject, inputs: list[str]
) -> tuple[list[Event], list[Event], AgentState]:
    """Deliver everything in an order hypothesis picks; return (delivered, emitted, state)."""
    in_flight: list[Event] = [agent_input(text=t) for t in inputs]
    # inputs from one producer keep their order (one partition); everything else may interleave
    delivered: list[Event] = []
    emitted: list[Event] = []
    state: AgentState | None = None
    while in_flight:
        first_input = next(
            (i for i, e in enumerate(in_flight) if e.envelope.source == "test"), None
        )
        choices = [i for i, e in enumerate(in_flight) if e.envelope.source != "test"]
        if first_input is not None:
            choices.append(first_input)
        event = in_flight.pop(data.draw(st.sampled_from(sorted(choices))))
        decision = transition(state, event, SPEC)
        assert not isinstance(decision, Rejected), decision
        assert not isinstance(decision, Duplicate)
        # re-delivering the event right away is a no-op
        again = transition(decision.state, event, SPEC)
        assert isinstance(again, Duplicate) and again.state == decision.state and again.emits == ()
        state = decision.state
        delivered.append(event)
        emitted += decision.emits
        for out in decision.emits:
            reply = respond(out)
            if reply is not None:
                in_flight.append(reply)
        if delivered and data.draw(st.booleans()):
            old = data.draw(st.sampled_from(delivered))
            replay = transition(state, old, SPEC)
            assert isinstance(replay, Duplicate) and replay.state == state and replay.emits == ()
    assert state is not None
    return delivered, emitted, state


@settings(max_examples=150, deadline=None)
@given(data=st.data(), inputs=texts)
def test_every_input_gets_exactly_one_outcome_in_any_delivery_order(
    data: st.DataObject, inputs: list[str]
) -> None:
    _, emitted, state = _simulate(data, inputs)
    outcomes = [e for e in emitted if isinstance(e, RunCompleted | RunFailed)]
    assert len(outcomes) == len(inputs)
    assert all(isinstance(o, RunCompleted) for o in outcomes)
    assert len({o.envelope.correlation_id for o in outcomes}) == len(inputs)
    assert state.run is None and state.queue == ()
    assert state.runs_completed == len(inputs)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), inputs=texts)
def test_folding_a_history_twice_gives_the_same_state_and_outputs(
    data: st.DataObject, inputs: list[str]
) -> None:
    delivered, emitted, state = _simulate(data, inputs)
    assert fold(delivered, SPEC) == state
    assert fold(delivered, SPEC) == fold(delivered, SPEC)
    replayed: list[Event] = []
    replay_state: AgentState | None = None
    for event in delivered:
        decision = transition(replay_state, event, SPEC)
        replay_state = decision.state
        replayed += decision.emits
    assert [e.model_dump_json() for e in replayed] == [e.model_dump_json() for e in emitted]
    assert state.version == len(delivered)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), inputs=texts)
def test_state_survives_a_snapshot_at_any_point(data: st.DataObject, inputs: list[str]) -> None:
    delivered, _, state = _simulate(data, inputs)
    cut = data.draw(st.integers(min_value=0, max_value=len(delivered)))
    head = fold(delivered[:cut], SPEC)
    restored = AgentState.from_json(head.to_json()) if head is not None else None
    assert fold(delivered[cut:], SPEC, restored) == state
