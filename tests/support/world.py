"""The tests' scripted world: the support agent, its model, tools and approver.

``respond`` turns a request the processor emitted into the result event a worker (or an
approver) would send back. Everything is derived from the request, so it is deterministic.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from agentstream.processors.core.machine import Decision, Rejected, transition
from agentstream.processors.core.spec import (
    AgentSpec,
    Budgets,
    Catalog,
    Memory,
    SpecVersions,
    ToolSpec,
    delegate,
    handoff,
    tool,
)
from agentstream.processors.core.state import AgentState, evolve
from agentstream.processors.replay.history import feeds_back
from agentstream.processors.testing import ModelReply, ScriptedWorld
from agentstream.schemas.events import (
    ApprovalGranted,
    ApprovalRequested,
    CallbackCompleted,
    Event,
    ModelCallCompleted,
    ModelCallRequested,
    TimerFired,
    TimerSet,
    ToolCallCompleted,
    ToolCallIntent,
    ToolCallRequested,
    ToolCallWaiting,
)


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order by id."""
    return {"order_id": order_id, "status": "shipped"}


@tool(requires_approval=True)
def refund(order_id: str, amount_cents: int) -> dict[str, str]:
    """Refund part of an order."""
    return {"order_id": order_id, "refunded": str(amount_cents)}


def support_spec(**budgets: object) -> AgentSpec:
    tools: tuple[ToolSpec, ...] = (lookup_order, refund)
    return AgentSpec(
        name="support",
        system_prompt="Be helpful.",
        tools=tools,
        budgets=Budgets.model_validate(budgets),
    )


def _model(request: ModelCallRequested) -> ModelReply:
    """Step 1 looks the order up; a user text with 'refund' also refunds (gated); then answers."""
    messages = json.loads(request.messages_json)
    user_text = messages[0]["content"] or ""
    tool_results = [m for m in messages if m["role"] == "tool"]
    if request.step != 1:
        return f"done after {len(tool_results)} tool result(s): {user_text}", []
    calls = [
        ToolCallIntent(
            tool_call_id="tc-1",
            tool="lookup_order",
            arguments_json=json.dumps({"order_id": "o-1"}),
        )
    ]
    if "refund" in user_text:
        calls.append(
            ToolCallIntent(
                tool_call_id="tc-2",
                tool="refund",
                arguments_json=json.dumps({"order_id": "o-1", "amount_cents": 500}),
            )
        )
    return None, calls


WORLD = ScriptedWorld(
    namespace=uuid.UUID("3d1c61c4-0a1e-4a7e-8b7e-6a0f9a3f2b10"),
    model=_model,
    tool=lambda request: json.dumps({"ok": True, "call": request.call_id}),
)

#: What the world sends back for a request (None for outcomes, which end a run).
respond = WORLD
#: The envelope of a reply to a request, as the world would make it.
result_envelope = WORLD.envelope


def model_answer(request: ModelCallRequested) -> ModelCallCompleted:
    reply = WORLD(request)
    assert isinstance(reply, ModelCallCompleted)
    return reply


def tool_result(request: ToolCallRequested) -> ToolCallCompleted:
    reply = WORLD(request)
    assert isinstance(reply, ToolCallCompleted)
    return reply


def approve(request: ApprovalRequested, approver: str = "alice") -> ApprovalGranted:
    reply = dataclasses.replace(WORLD, approver=approver)(request)
    assert isinstance(reply, ApprovalGranted)
    return reply


# --- Memory, run control, versions and waits -------------------------------------------------


@tool(on_failure="report_to_model")
def collect_signature(document: str) -> dict[str, str]:
    """Ask a person to sign a document; they sign in another system, which calls back."""
    return {"document": document, "status": "sent for signature"}


@tool
def await_payment(invoice: str) -> dict[str, str]:
    """Wait until an invoice is paid; the payment system calls back."""
    return {"invoice": invoice, "status": "pending"}


def agent_spec(
    *extra: ToolSpec,
    memory: Memory | None = None,
    version: int = 1,
    system_prompt: str = "Be helpful.",
    **budgets: object,
) -> AgentSpec:
    """The support agent with more tools (built-in or waiting ones), memory and a version."""
    return AgentSpec(
        name="support",
        system_prompt=system_prompt,
        tools=(lookup_order, refund, *extra),
        budgets=Budgets.model_validate(budgets),
        memory=memory or Memory(),
        version=version,
    )


def _newest_question(messages: list[dict[str, object]]) -> int:
    """The index of the run's question: the last user message (earlier turns come first)."""
    return max(i for i, m in enumerate(messages) if m["role"] == "user")


def _intent(number: int, tool_name: str, arguments: dict[str, object]) -> ToolCallIntent:
    return ToolCallIntent(
        tool_call_id=f"tc-{number}", tool=tool_name, arguments_json=json.dumps(arguments)
    )


def _first_step(text: str) -> list[ToolCallIntent]:
    """What the chat model asks for first, by the question's leading word."""
    word, _, rest = text.partition(" ")
    if word == "remember":
        key, _, value = rest.partition("=")
        return [_intent(1, "remember", {"key": key, "value": value})]
    if word == "sleep":
        return [_intent(1, "sleep", {"seconds": float(rest)})]
    if word == "sign":
        return [_intent(1, "collect_signature", {"document": rest})]
    if word == "pay":
        return [_intent(1, "await_payment", {"invoice": rest})]
    return [_intent(1, "lookup_order", {"order_id": "o-1"})]


def _chat_model(request: ModelCallRequested) -> ModelReply:
    """Like the support model, but reads the newest question (with memory, earlier turns come
    first): one tool call chosen by its first word, then an answer that says how much it saw."""
    messages = json.loads(request.messages_json)
    asked = _newest_question(messages)
    text = str(messages[asked]["content"])
    own = messages[asked + 1 :]
    if not own:
        return None, _first_step(text)
    results = sum(1 for m in own if m["role"] == "tool")
    return f"answered {text!r} after {results} tool result(s) and {asked} earlier message(s)", []


CHAT_WORLD = ScriptedWorld(
    namespace=uuid.UUID("9b0e4f57-52a4-4f0e-9d6c-1c6a3f5e7d21"),
    model=_chat_model,
    tool=lambda request: json.dumps({"ok": True, "call": request.call_id}),
)


def answer_with(
    request: ModelCallRequested, *calls: tuple[str, dict[str, object]], content: str | None = None
) -> ModelCallCompleted:
    """The model's answer to ``request``: ``content``, or calls of (tool, arguments)."""
    reply = WORLD(request)
    assert isinstance(reply, ModelCallCompleted)
    intents = [_intent(n, name, arguments) for n, (name, arguments) in enumerate(calls, start=1)]
    return evolve(reply, content=None if calls else content, tool_calls=intents)


def waiting(request: ToolCallRequested, expires_at: datetime, callback_id: str) -> ToolCallWaiting:
    """A worker's answer that another system completes the call (by ``expires_at``)."""
    return ToolCallWaiting(
        envelope=result_envelope(request, "waiting"),
        call_id=request.call_id,
        tool=request.tool,
        callback_id=callback_id,
        expires_at=expires_at,
    )


def callback_done(
    after: Event, callback_id: str, result_json: str, delay: timedelta = timedelta(minutes=10)
) -> CallbackCompleted:
    """The other system completes ``callback_id``, ``delay`` after the event ``after``."""
    return CallbackCompleted(
        envelope=result_envelope(
            after, f"callback/{callback_id}", delay_ms=_ms(delay), source="esign"
        ),
        callback_id=callback_id,
        result_json=result_json,
        completed_by="esign",
    )


def timer_fired(timer: TimerSet, at: datetime | None = None) -> TimerFired:
    """The timer worker's event for ``timer``, at its ``fire_at`` unless told otherwise."""
    delay = (at or timer.fire_at) - timer.envelope.occurred_at
    return TimerFired(
        envelope=result_envelope(timer, "fired", delay_ms=_ms(delay), source="timer"),
        timer_id=timer.timer_id,
        call_id=timer.call_id,
        purpose=timer.purpose,
    )


def _ms(delay: timedelta) -> int:
    return round(delay.total_seconds() * 1000)


class Agent:
    """One agent's state, advanced event by event, for tests that steer it by hand."""

    def __init__(self, spec: AgentSpec | SpecVersions, state: AgentState | None = None) -> None:
        self.spec = spec
        self.state = state

    def send(self, event: Event) -> Decision:
        decision = transition(self.state, event, self.spec)
        self.state = decision.state
        return decision

    def settle(
        self, decision: Decision, world: Callable[[Event], Event | None] = CHAT_WORLD
    ) -> list[Event]:
        """Answer what ``decision`` asked for, and what that asks for, until nothing is left;
        every event emitted on the way, in order."""
        pending: deque[Event] = deque(decision.emits)
        emitted = list(decision.emits)
        while pending:
            reply = world(pending.popleft())
            if reply is not None:
                emits = self.send(reply).emits
                emitted += emits
                pending += emits
        return emitted


# --- Teams: agents of several kinds that delegate to and hand off to each other --------------

#: The kinds of the team and the tools of each: triage (the default kind) asks the others or
#: hands the conversation to refunds; the researcher looks orders up, asks the writer (or, in
#: a circle, triage) and hands off to the writer; refunds refunds (gated by an approval).
TEAM_TOOLS: dict[str, tuple[ToolSpec, ...]] = {
    "triage": (
        delegate("researcher"),
        delegate("writer"),
        delegate("refunds"),
        handoff("refunds"),
    ),
    "researcher": (lookup_order, delegate("writer"), delegate("triage"), handoff("writer")),
    "writer": (),
    "refunds": (lookup_order, refund),
}


def team(**budgets: Mapping[str, object]) -> Catalog:
    """The team's catalog; ``budgets`` by kind (``researcher={"max_depth": 1}``)."""
    return Catalog.of(
        [
            AgentSpec(
                name=kind,
                system_prompt=f"You are the {kind}.",
                tools=tools,
                budgets=Budgets.model_validate(budgets.get(kind, {})),
            )
            for kind, tools in TEAM_TOOLS.items()
        ]
    )


def team_with_terse_writer() -> Catalog:
    """The team, with a writer allowed fewer tokens than its one model step uses."""
    return team(writer={"max_tokens": 10})


def _team_first_step(text: str, offered: set[str]) -> list[ToolCallIntent]:
    """A text ``"ask_a ask_b: rest"`` calls the tools it names (offered ``ask_*`` and
    ``handoff_*`` ones) with ``rest`` as their task or note; any other text looks the order up
    (and refunds it, when it says so) where those tools are offered."""
    head, colon, rest = text.partition(": ")
    named = head.split()
    if colon and named and all(n in offered for n in named):
        return [
            _intent(n, name, {"note" if name.startswith("handoff") else "task": rest})
            for n, name in enumerate(named, start=1)
        ]
    calls = []
    if "lookup_order" in offered:
        calls.append(_intent(1, "lookup_order", {"order_id": "o-1"}))
    if "refund" in offered and "refund" in text:
        calls.append(_intent(2, "refund", {"order_id": "o-1", "amount_cents": 500}))
    return calls


def _team_model(request: ModelCallRequested) -> ModelReply:
    """Each agent acts on its newest question (see ``_team_first_step``); then it answers with
    the results it got, in the order the model saw them."""
    messages = json.loads(request.messages_json)
    asked = _newest_question(messages)
    text = str(messages[asked]["content"])
    own = messages[asked + 1 :]
    if not own:
        offered = {t["function"]["name"] for t in json.loads(request.tools_json)}
        calls = _team_first_step(text, offered)
        if calls:
            return None, calls
    results = [str(m["content"]) for m in own if m["role"] == "tool"]
    return f"{request.envelope.agent_id} on {text!r}: [{' | '.join(results)}]", []


#: The team's model and tools; nobody approves (a test decides).
TEAM_WORLD = ScriptedWorld(
    namespace=uuid.UUID("5e0c2b7a-6f1d-4c8e-9a3b-2d4f6e8a0c13"),
    model=_team_model,
    tool=lambda request: json.dumps({"ok": True, "call": request.call_id}),
    approver=None,
)


class Team:
    """Every agent's state, advanced by the events keyed to it, for tests of agents that
    delegate and hand off: what the agents emit for each other (tasks, answers, cancels) is
    delivered like any other event, and the world answers the rest."""

    def __init__(
        self, catalog: Catalog, world: Callable[[Event], Event | None] = TEAM_WORLD
    ) -> None:
        self.catalog = catalog
        self.world = world
        self.states: dict[str, AgentState] = {}
        #: every event delivered, in order
        self.delivered: list[Event] = []
        #: events ``settle`` kept back, for the test to deliver
        self.held: list[Event] = []
        self.rejected: list[Rejected] = []

    def __getitem__(self, agent_id: str) -> AgentState:
        return self.states[agent_id]

    def send(self, event: Event) -> Decision:
        agent = event.envelope.agent_id
        decision = transition(self.states.get(agent), event, self.catalog)
        self.states[agent] = decision.state
        self.delivered.append(event)
        if isinstance(decision, Rejected):
            self.rejected.append(decision)
        return decision

    def settle(
        self, emitted: Sequence[Event], hold: Callable[[Event], bool] = lambda _: False
    ) -> list[Event]:
        """Deliver or answer ``emitted``, and what that emits, first come first served, until
        nothing is left; events ``hold`` picks are kept in ``held`` instead. Every event
        emitted on the way, in order."""
        pending: deque[Event] = deque(emitted)
        out = list(pending)
        while pending:
            event = pending.popleft()
            if hold(event):
                self.held.append(event)
                continue
            reply = event if feeds_back(event) else self.world(event)
            if reply is not None:
                emits = self.send(reply).emits
                out += emits
                pending += emits
        return out

    def run(self, *inputs: Event, hold: Callable[[Event], bool] = lambda _: False) -> list[Event]:
        """Send ``inputs`` and settle what they start."""
        out: list[Event] = []
        for event in inputs:
            out += self.settle(self.send(event).emits, hold)
        return out

    def release(self, hold: Callable[[Event], bool] = lambda _: False) -> list[Event]:
        """Settle the held events, in the order they were held."""
        held, self.held = self.held, []
        return self.settle(held, hold)
