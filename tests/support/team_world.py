"""The team of the delegation tests: a lead that asks a researcher and a reviewer at once (one
model reply, two calls), and the two children. The reviewer's sign-off waits for a person, so a
test decides when that child ends; the researcher answers as soon as its tool has run."""

from __future__ import annotations

from agentstream.processors.core.spec import AgentSpec, Budgets, ModelSpec, delegate, tool

__all__ = ["LEAD", "RESEARCHER", "REVIEWER", "lead", "researcher", "reviewer"]

LEAD, RESEARCHER, REVIEWER = "lead", "researcher", "reviewer"


@tool(timeout_s=5)
def find_sources(topic: str) -> dict[str, object]:
    """Sources on a topic."""
    return {"topic": topic, "sources": 3}


@tool(requires_approval=True, timeout_s=5)
def sign_off(topic: str) -> dict[str, str]:
    """Sign a plan off: a person approves every sign-off."""
    return {"topic": topic, "signed": "yes"}


def _scripted(name: str, rules: list[dict[str, object]], answer: str) -> ModelSpec:
    return ModelSpec(
        provider="scripted", name=name, parameters={"script": {"rules": rules, "answer": answer}}
    )


# Both rules in one group: the model asks both children in the same reply, so the two runs
# are in flight together and the lead goes on only once both have answered.
_PLAN = r"\bplan (?P<topic>[\w-]+)"
LEAD_RULES: list[dict[str, object]] = [
    {
        "when": _PLAN,
        "tool": "ask_researcher",
        "arguments": {"task": "research {topic}"},
        "group": "team",
    },
    {
        "when": _PLAN,
        "tool": "ask_reviewer",
        "arguments": {"task": "review {topic}"},
        "group": "team",
    },
]


def lead() -> AgentSpec:
    return AgentSpec(
        name=LEAD,
        system_prompt="Plan with your team.",
        model=_scripted(LEAD, LEAD_RULES, "plan: {summary}"),
        tools=(delegate(RESEARCHER), delegate(REVIEWER)),
        budgets=Budgets(run_deadline_s=600),
    )


def researcher() -> AgentSpec:
    rules: list[dict[str, object]] = [
        {
            "when": r"\bresearch (?P<topic>[\w-]+)",
            "tool": "find_sources",
            "arguments": {"topic": "{topic}"},
        }
    ]
    return AgentSpec(
        name=RESEARCHER,
        system_prompt="Find sources.",
        model=_scripted(
            RESEARCHER, rules, "researched {topic}: {result.find_sources.sources} sources"
        ),
        tools=(find_sources,),
    )


def reviewer() -> AgentSpec:
    rules: list[dict[str, object]] = [
        {
            "when": r"\breview (?P<topic>[\w-]+)",
            "tool": "sign_off",
            "arguments": {"topic": "{topic}"},
        }
    ]
    return AgentSpec(
        name=REVIEWER,
        system_prompt="Review plans.",
        model=_scripted(REVIEWER, rules, "reviewed {topic}: signed {result.sign_off.signed}"),
        tools=(sign_off,),
    )
