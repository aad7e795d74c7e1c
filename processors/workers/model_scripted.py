"""A deterministic model for offline demos and tests: rules map the conversation to tool calls
and, once no rule is left to fire, to a final answer. Same conversation, same reply.

A rule fires at most once per run, in order, when its ``when`` pattern is found in the user's
text (with ``recall``, also in the user's earlier messages the run starts with, newest first:
what the agent remembers from past runs) and every placeholder of its arguments resolves.
Placeholders: ``{text}`` (the user's text), the named groups of every matching rule's pattern
so far (``{order_id}``), and ``{result.TOOL.FIELD}`` (a field of that tool's latest JSON
result). A value that is a single placeholder keeps the placeholder's JSON type. Rules sharing
a ``group`` fire together: the reply asks for every one of them that fires now, in parallel.

A script comes from the model call's parameters (``{"script": {"rules": [...]}}``, so an agent
spec can carry its own) or by the model's name from the built-in scripts (``support-script``
drives the demo support agent; ``triage-script``, ``orders-script``, ``policy-script`` and
``refunds-script`` the demo team of ``agentstream demo --team``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentstream.processors.core.ids import canonical_json
from agentstream.processors.errors import ProviderError
from agentstream.processors.workers.model_adapters import ModelRequest, ModelResponse
from agentstream.schemas.events import TokenUsage, ToolCallIntent

__all__ = [
    "BUILTIN_SCRIPTS",
    "SUPPORT_SCRIPT",
    "TEAM_SCRIPTS",
    "Script",
    "ScriptRule",
    "ScriptedModel",
]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


class ScriptRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    when: str
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    recall: bool = False
    #: rules of one group fire together, in one reply (parallel calls: delegations, say)
    group: str | None = None


class Script(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[ScriptRule, ...] = ()
    #: Final answer template (placeholders as in arguments, plus ``{summary}``).
    answer: str = "{summary}"


_ORDER_ID = r"\b(?P<order_id>o-\d+)\b"
#: looks up the order named now or, with recall, earlier ("when will it arrive?" after "where
#: is o-1001?"; a refund request handed over with the conversation that named the order)
_LOOKUP_ORDER = ScriptRule(
    when=_ORDER_ID, tool="lookup_order", arguments={"order_id": "{order_id}"}, recall=True
)
_REFUND = ScriptRule(
    when=r"\brefund",
    tool="issue_refund",
    arguments={
        "order_id": "{order_id}",
        "amount_cents": "{result.lookup_order.total_cents}",
        "reason": "{text}",
    },
)

SUPPORT_SCRIPT = Script(
    rules=(
        _LOOKUP_ORDER,
        _REFUND,
        ScriptRule(when=r"\breturn", tool="search_faq", arguments={"query": "{text}"}),
    ),
    answer="Thanks for your message. {summary}",
)

#: The demo team: triage asks orders and policy at once (one group) and hands refunds over.
TEAM_SCRIPTS: dict[str, Script] = {
    "triage-script": Script(
        rules=(
            # first: a refund request goes to the refunds agent, nothing else is asked
            ScriptRule(when=r"\brefund", tool="handoff_to_refunds", arguments={"note": "{text}"}),
            ScriptRule(
                when=_ORDER_ID,
                tool="ask_orders",
                arguments={"task": "What is the status of order {order_id}?"},
                group="ask",
            ),
            ScriptRule(
                when=r"\b(return|ship|deliver|warrant)",
                tool="ask_policy",
                arguments={"task": "{text}"},
                group="ask",
            ),
        ),
        answer="Thanks for your message. {summary}",
    ),
    "orders-script": Script(
        rules=(
            ScriptRule(when=_ORDER_ID, tool="lookup_order", arguments={"order_id": "{order_id}"}),
        ),
        answer="Order {order_id} is {result.lookup_order.status}, "
        "carrier {result.lookup_order.carrier}",
    ),
    "policy-script": Script(
        rules=(ScriptRule(when=r"\S", tool="search_faq", arguments={"query": "{text}"}),),
        answer="{result.search_faq.answer}",
    ),
    "refunds-script": Script(
        # the order may be named only in the conversation handed over
        rules=(_LOOKUP_ORDER, _REFUND.model_copy(update={"recall": True})),
        answer="Refunded {result.issue_refund.refunded_cents} cents for order "
        "{result.issue_refund.order_id}.",
    ),
}

BUILTIN_SCRIPTS: dict[str, Script] = {"support-script": SUPPORT_SCRIPT, **TEAM_SCRIPTS}


class _Unresolved(Exception):
    pass


class ScriptedModel:
    """A ModelAdapter that never does I/O."""

    def __init__(self, scripts: Mapping[str, Script] | None = None) -> None:
        self.scripts = dict(BUILTIN_SCRIPTS if scripts is None else scripts)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return self.reply(request)

    async def aclose(self) -> None:
        return None

    def script_for(self, request: ModelRequest) -> Script:
        inline = request.parameters.get("script")
        if inline is not None:
            try:
                return Script.model_validate(inline)
            except ValidationError as exc:
                raise ProviderError(f"invalid inline script: {exc}", retryable=False) from exc
        script = self.scripts.get(request.model)
        if script is None:
            raise ProviderError(f"no script named {request.model!r}", retryable=False)
        return script

    def reply(self, request: ModelRequest) -> ModelResponse:
        script = self.script_for(request)
        messages = request.messages
        said = [str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"]
        text = said[0] if said else ""
        called = {
            call.get("id")
            for m in messages
            if m.get("role") == "assistant"
            for call in m.get("tool_calls") or ()
        }
        results = _tool_results(messages)
        values: dict[str, Any] = {"text": text}
        intents: list[ToolCallIntent] = []
        fired_group: str | None = None
        for index, rule in enumerate(script.rules):
            if intents and rule.group != fired_group:
                continue  # once a group fired, only its other rules join the reply
            searched = said if rule.recall else said[:1]
            match = next(
                (m for t in searched if (m := re.search(rule.when, t, re.IGNORECASE))), None
            )
            if match is None:
                continue
            values.update({k: v for k, v in match.groupdict().items() if v is not None})
            call_id = f"rule-{index}-{rule.tool}"
            if call_id in called:
                continue
            try:
                arguments = {k: _render(v, values, results) for k, v in rule.arguments.items()}
            except _Unresolved:
                continue
            intents.append(
                ToolCallIntent(
                    tool_call_id=call_id, tool=rule.tool, arguments_json=canonical_json(arguments)
                )
            )
            fired_group = rule.group
            if rule.group is None:
                break
        if intents:
            said_now = "".join(i.arguments_json for i in intents)
            return ModelResponse(None, intents, _usage(messages, said_now))
        values["summary"] = _summary(messages)
        try:
            answer = str(_render(script.answer, values, results))
        except _Unresolved:
            answer = str(values["summary"])
        return ModelResponse(answer, [], _usage(messages, answer))


def _tool_results(messages: list[dict[str, Any]]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for message in messages:
        if message.get("role") == "tool" and message.get("name"):
            results[str(message["name"])] = _parse(message.get("content"))
    return results


def _parse(content: Any) -> Any:
    if not isinstance(content, str):
        return content
    try:
        return json.loads(content)
    except ValueError:
        return content


def _lookup(name: str, values: dict[str, Any], results: dict[str, Any]) -> Any:
    if name.startswith("result."):
        _, tool, *path = name.split(".")
        if tool not in results:
            raise _Unresolved(name)
        found = results[tool]
        for part in path:
            if not isinstance(found, dict) or part not in found:
                raise _Unresolved(name)
            found = found[part]
        return found
    if name not in values:
        raise _Unresolved(name)
    return values[name]


def _render(template: Any, values: dict[str, Any], results: dict[str, Any]) -> Any:
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template)
    if whole:
        return _lookup(whole.group(1), values, results)

    def one(match: re.Match[str]) -> str:
        found = _lookup(match.group(1), values, results)
        return found if isinstance(found, str) else json.dumps(found, sort_keys=True)

    return _PLACEHOLDER.sub(one, template)


def _summary(messages: list[dict[str, Any]]) -> str:
    lines = []
    for message in messages:
        if message.get("role") != "tool":
            continue
        name = message.get("name") or "tool"
        result = _parse(message.get("content"))
        if isinstance(result, dict) and "error" in result:
            lines.append(f"{name} was not done ({result['error']})")
        else:
            shown = result if isinstance(result, str) else canonical_json(result)
            lines.append(f"{name}: {shown}")
    if not lines:
        return "How can I help you?"
    said = "; ".join(lines)
    # another agent's answer often ends a sentence of its own already
    return said if said.endswith((".", "!", "?")) else said + "."


def _usage(messages: list[dict[str, Any]], output: str) -> TokenUsage:
    # A rough token count (4 characters each), so budgets behave as with a real model.
    prompt = sum(len(str(m.get("content") or "")) for m in messages)
    return TokenUsage(prompt_tokens=prompt // 4 + 1, completion_tokens=len(output) // 4 + 1)
