"""Golden histories: recorded ``.jsonl`` files of events with the outputs they produced.

Each line is one delivered event and what ``transition`` did with it, for the agent the event
is keyed to (a history may hold several agents that delegate to and hand off to each other).
Replaying a file through the current state machine must reproduce every recorded output
exactly; a change that alters behaviour shows up as a diff, and is accepted by re-recording
(``cd tests/support && python golden.py``) and reviewing the diff of the files.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentstream.processors.core.machine import Rejected, transition
from agentstream.processors.core.spec import AgentSpec, Catalog, SpecVersions
from agentstream.processors.core.state import AgentState
from agentstream.processors.replay.history import feeds_back
from agentstream.schemas.events import EVENT_TYPES, Event

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"


#: Fields events gained after the first histories were recorded: written only when set, so
#: that re-recording leaves those histories byte for byte as they were.
_ADDED_LATER = frozenset({"kind", "context_json", "origin"})


def event_json(event: Event) -> dict[str, Any]:
    data = event.model_dump(mode="json")
    for name in _ADDED_LATER & data.keys():
        if data[name] is None:
            del data[name]
    return {"type": type(event).__name__, "data": data}


def event_from_json(data: dict[str, Any]) -> Event:
    by_short_name = {cls.__name__: cls for cls in EVENT_TYPES.values()}
    return by_short_name[data["type"]].model_validate(data["data"])


@dataclass(frozen=True)
class Line:
    event: dict[str, Any]
    emits: list[dict[str, Any]]
    rejection: dict[str, str] | None
    version: int


@dataclass(frozen=True)
class Rollout:
    """What the processor served over a history, as deployments: (the number of the first
    delivery it handles, counting from 0, the specs served from there on)."""

    deployments: tuple[tuple[int, AgentSpec | SpecVersions | Catalog], ...]

    def served(self, delivery: int) -> AgentSpec | SpecVersions | Catalog:
        return [spec for first, spec in self.deployments if first <= delivery][-1]


#: The spec a history is replayed on: one, its versions, every kind served, or how they were
#: rolled out.
Served = AgentSpec | SpecVersions | Catalog | Rollout

#: What the world answers an emitted event with: nothing, one event, or several in order.
Reply = Event | Sequence[Event] | None


def replay(lines: list[Line], spec: Served) -> list[Line]:
    states: dict[str, AgentState] = {}
    out = []
    for number, line in enumerate(lines):
        served = spec.served(number) if isinstance(spec, Rollout) else spec
        event = event_from_json(line.event)
        agent = event.envelope.agent_id
        decision = transition(states.get(agent), event, served)
        state = states[agent] = decision.state
        rejection = None
        if isinstance(decision, Rejected):
            rejection = {
                "error_class": decision.error_class,
                "reason": decision.reason,
            }
        out.append(
            Line(line.event, [event_json(e) for e in decision.emits], rejection, state.version)
        )
    return out


def load(path: Path) -> list[Line]:
    return [Line(**json.loads(raw)) for raw in path.read_text().splitlines() if raw.strip()]


def dump(path: Path, lines: list[Line]) -> None:
    path.write_text(
        "".join(
            json.dumps(line.__dict__, sort_keys=True, ensure_ascii=False) + "\n" for line in lines
        )
    )


def run_scenario(
    spec: Served, inputs: list[Event], respond: Callable[[Event], Reply]
) -> list[Line]:
    """Deliver inputs, and every reply and every output that is an input (a delegated task, a
    delegated run's answer, a cancel, a fact), in FIFO order; record each delivery."""
    queue: deque[Event] = deque(inputs)
    delivered: list[Line] = []
    while queue:
        event = queue.popleft()
        delivered.append(Line(event_json(event), [], None, 0))
        state_lines = replay(delivered, spec)
        for emitted in state_lines[-1].emits:
            output = event_from_json(emitted)
            reply = output if feeds_back(output) else respond(output)
            if isinstance(reply, Event):
                queue.append(reply)
            elif reply is not None:
                queue.extend(reply)
    return replay(delivered, spec)


def record() -> None:
    """Record every scenario of golden_scenarios.py."""
    from golden_scenarios import SCENARIOS

    GOLDEN_DIR.mkdir(exist_ok=True)
    for name, (spec, inputs, respond) in SCENARIOS.items():
        path = GOLDEN_DIR / f"{name}.jsonl"
        dump(path, run_scenario(spec, inputs, respond))
        print(f"recorded {path.name}", file=sys.stderr)


if __name__ == "__main__":
    # Through the module, not __main__: the scenarios' Rollouts are golden.Rollout.
    from golden import record as record_from_module

    record_from_module()
