"""How an agent is defined: its model, prompt, tools and budgets.

Tools are typed Python functions; the JSON schema the model sees is derived from the signature,
so the declaration and the implementation cannot drift apart::

    @tool(requires_approval=True, timeout_s=10)
    def refund(order_id: str, amount_cents: int) -> dict[str, str]:
        "Refund part of an order."
        ...
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, create_model

from agentstream.schemas.errors import ConfigurationError

_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

__all__ = [
    "AgentSpec",
    "Budgets",
    "BuiltinTool",
    "Catalog",
    "Memory",
    "ModelSpec",
    "RetryPolicy",
    "SpecVersions",
    "ToolSpec",
    "delegate",
    "handoff",
    "remember",
    "sleep",
    "tool",
]


class RetryPolicy(BaseModel):
    """How a worker retries a call: exponential backoff with full jitter."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=20)
    initial_backoff_s: float = Field(default=0.2, ge=0)
    max_backoff_s: float = Field(default=10.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)


class ModelSpec(BaseModel):
    """Which model answers, and with what parameters."""

    model_config = ConfigDict(frozen=True)

    provider: str = "scripted"
    name: str = "default"
    parameters: dict[str, Any] = Field(default_factory=dict)
    fallback_provider: str | None = None
    fallback_name: str | None = None


class Budgets(BaseModel):
    """Limits that end a run as failed instead of letting it loop forever."""

    model_config = ConfigDict(frozen=True)

    max_steps: int = Field(default=10, ge=1, description="model calls per run")
    max_tool_calls: int = Field(default=20, ge=0, description="tool calls per run")
    max_tokens: int = Field(default=200_000, ge=1, description="prompt + completion tokens per run")
    run_deadline_s: float = Field(default=3600.0, gt=0, description="wall time per run")
    approval_timeout_s: float = Field(default=86_400.0, gt=0, description="time to decide")
    max_depth: int = Field(
        default=3, ge=0, le=16, description="runs delegated or handed off in a chain from a root"
    )


class Memory(BaseModel):
    """What an agent keeps across runs.

    ``turns``: how many past runs (the question and the final answer; with ``tool_results``
    also the run's tool calls and results) the next run's model call starts with; the oldest
    drop out first, and also while they are over ``max_bytes`` together. 0 keeps none, the
    default, so a spec written before memory replays its recorded histories unchanged.
    ``max_facts``/``max_fact_bytes`` bound the long-term facts (the ``remember`` tool and
    ``MemoryRecorded`` events): past ``max_facts`` the oldest fact is dropped."""

    model_config = ConfigDict(frozen=True)

    turns: int = Field(default=0, ge=0, le=1000)
    max_bytes: int = Field(default=32_768, ge=0)
    tool_results: bool = False
    max_facts: int = Field(default=50, ge=0, le=10_000)
    max_fact_bytes: int = Field(default=2048, ge=1, le=128 * 1024)


class BuiltinTool(StrEnum):
    """Tools the state machine answers itself: nothing runs in a worker."""

    REMEMBER = "remember"
    SLEEP = "sleep"
    DELEGATE = "delegate"
    HANDOFF = "handoff"


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call. ``func`` is only needed where the tool runs (the worker)."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    requires_approval: bool = False
    timeout_s: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    on_failure: Literal["fail_run", "report_to_model"] = "fail_run"
    func: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    builtin: BuiltinTool | None = None
    #: the agent kind a ``delegate`` or ``handoff`` tool starts a run of
    target: str | None = None

    def definition(self) -> dict[str, Any]:
        """The OpenAI-style function definition the model sees."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": dict(self.parameters),
            },
        }


def _parameters_schema(func: Callable[..., Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigurationError(f"tool {func.__name__}: *args/**kwargs cannot be described")
        if param.annotation is inspect.Parameter.empty:
            raise ConfigurationError(f"tool {func.__name__}: parameter {name!r} needs a type")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (param.annotation, default)
    model = create_model(f"{func.__name__}_arguments", **fields)
    schema: dict[str, Any] = model.model_json_schema()
    schema.pop("title", None)
    schema["additionalProperties"] = False
    return schema


@overload
def tool(func: Callable[..., Any], /) -> ToolSpec: ...


@overload
def tool(
    *,
    name: str | None = None,
    requires_approval: bool = False,
    timeout_s: float = 30.0,
    retry: RetryPolicy | None = None,
    on_failure: Literal["fail_run", "report_to_model"] = "fail_run",
) -> Callable[[Callable[..., Any]], ToolSpec]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    requires_approval: bool = False,
    timeout_s: float = 30.0,
    retry: RetryPolicy | None = None,
    on_failure: Literal["fail_run", "report_to_model"] = "fail_run",
) -> ToolSpec | Callable[[Callable[..., Any]], ToolSpec]:
    """Declare a typed function as a tool (bare ``@tool`` or ``@tool(...)``)."""

    def declare(f: Callable[..., Any]) -> ToolSpec:
        return ToolSpec(
            name=name or f.__name__,
            description=inspect.getdoc(f) or f.__name__,
            parameters=_parameters_schema(f),
            requires_approval=requires_approval,
            timeout_s=timeout_s,
            retry=retry or RetryPolicy(),
            on_failure=on_failure,
            func=f,
        )

    return declare(func) if func is not None else declare


def _remember(key: str, value: str) -> None:
    """Remember a fact for later conversations with this user, under a short key (like
    "preferred_language"). A new value for a key replaces the old one."""


def _sleep(seconds: float | None = None, until: str | None = None) -> None:
    """Pause this run for some seconds, or until a time (ISO 8601 with a UTC offset), then
    carry on where it was. Use it to wait hours or days; nothing is lost meanwhile."""


#: The built-in ``remember`` tool: add it to a spec's tools to let the model keep facts.
remember = replace(tool(_remember), name="remember", func=None, builtin=BuiltinTool.REMEMBER)
#: The built-in ``sleep`` tool: a durable timer, driven by the timer worker.
sleep = replace(tool(_sleep), name="sleep", func=None, builtin=BuiltinTool.SLEEP)


def _delegate(task: str) -> None:
    """(replaced per target)"""


def _handoff(note: str) -> None:
    """(replaced per target)"""


_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")


def _routing(
    signature: Callable[..., Any], builtin: BuiltinTool, kind: str, name: str, description: str
) -> ToolSpec:
    """A built-in tool that starts a run of ``kind``: its parameters from ``signature``."""
    return replace(
        tool(signature), name=name, description=description, func=None, builtin=builtin, target=kind
    )


def delegate(
    kind: str, description: str = "", *, name: str | None = None, timeout_s: float = 3600.0
) -> ToolSpec:
    """A tool that asks an agent of ``kind`` to do a task: a child run of that kind starts with
    the task, and its outcome is the call's result. Several calls in one step run in parallel.
    Past ``timeout_s`` (or the run's deadline) the call ends as timed out and the child run is
    cancelled."""
    spec = _routing(
        _delegate,
        BuiltinTool.DELEGATE,
        kind,
        name or f"ask_{_TOOL_NAME.sub('_', kind)}",
        description
        or f"Ask the {kind} agent to do a task; its answer comes back as this call's result.",
    )
    return replace(spec, timeout_s=timeout_s)


def handoff(kind: str, description: str = "", *, name: str | None = None) -> ToolSpec:
    """A tool that hands the conversation to an agent of ``kind``: this run ends as handed off
    and that agent continues with the conversation so far, and the note."""
    return _routing(
        _handoff,
        BuiltinTool.HANDOFF,
        kind,
        name or f"handoff_to_{_TOOL_NAME.sub('_', kind)}",
        description or f"Hand this conversation over to the {kind} agent, with a note saying why.",
    )


@dataclass(frozen=True)
class AgentSpec:
    """Everything the state machine needs to know about an agent.

    ``version`` names this definition: a run records the version (and :attr:`content_hash`)
    it started on and finishes on it, even when newer versions are served next to it."""

    name: str
    system_prompt: str = ""
    model: ModelSpec = field(default_factory=ModelSpec)
    tools: tuple[ToolSpec, ...] = ()
    budgets: Budgets = field(default_factory=Budgets)
    memory: Memory = field(default_factory=Memory)
    version: int = 1

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ConfigurationError(f"agent {self.name}: version must be 1 or more")
        if not _KIND.fullmatch(self.name):
            raise ConfigurationError(
                f"agent name {self.name!r}: use letters, digits, '.', '_' or '-' (it names the "
                "agent kind on the wire and in agent ids)"
            )
        names = [t.name for t in self.tools]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ConfigurationError(
                f"agent {self.name}: duplicate tool names {sorted(duplicates)}"
            )

    def tool(self, name: str) -> ToolSpec | None:
        for spec in self.tools:
            if spec.name == name:
                return spec
        return None

    def tool_definitions(self) -> list[dict[str, Any]]:
        return [t.definition() for t in self.tools]

    # Every model call carries these; computed once per spec, not once per call.
    @cached_property
    def tools_json(self) -> str:
        return json.dumps(self.tool_definitions(), sort_keys=True)

    @cached_property
    def parameters_json(self) -> str:
        return json.dumps(self.model.parameters, sort_keys=True)

    @cached_property
    def content_hash(self) -> str:
        """A short hash of everything that decides the agent's behaviour: prompt, model, tools
        (with their approval, timeout, retry and failure settings), budgets and memory."""
        content = {
            "system_prompt": self.system_prompt,
            "model": self.model.model_dump(mode="json"),
            "tools": [
                {
                    **t.definition(),
                    "requires_approval": t.requires_approval,
                    "timeout_s": t.timeout_s,
                    "retry": t.retry.model_dump(mode="json"),
                    "on_failure": t.on_failure,
                    "builtin": t.builtin,
                    # fields added later count only when set, so that the specs written before
                    # them keep their hash (and their runs their version)
                    **({"target": t.target} if t.target is not None else {}),
                }
                for t in self.tools
            ],
            "budgets": self.budgets.model_dump(
                mode="json", exclude={"max_depth"} if self.budgets.max_depth == 3 else None
            ),
            "memory": self.memory.model_dump(mode="json"),
        }
        encoded = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version} ({self.content_hash})"


@dataclass(frozen=True)
class SpecVersions:
    """The versions of one agent spec a processor serves: new runs start on the newest, and a
    run continues on the version it started on."""

    versions: tuple[AgentSpec, ...]

    def __post_init__(self) -> None:
        if not self.versions:
            raise ConfigurationError("no agent spec given")
        names = {s.name for s in self.versions}
        if len(names) > 1:
            raise ConfigurationError(f"versions of different agents: {sorted(names)}")
        numbers = [s.version for s in self.versions]
        if len(set(numbers)) != len(numbers):
            raise ConfigurationError(f"agent {self.versions[0].name}: a version given twice")
        object.__setattr__(self, "versions", tuple(sorted(self.versions, key=lambda s: s.version)))

    @classmethod
    def of(cls, specs: AgentSpec | SpecVersions | Iterable[AgentSpec]) -> SpecVersions:
        if isinstance(specs, SpecVersions):
            return specs
        if isinstance(specs, AgentSpec):
            return cls((specs,))
        return cls(tuple(specs))

    @property
    def newest(self) -> AgentSpec:
        return self.versions[-1]

    def up_to(self, number: int) -> SpecVersions:
        """The versions up to ``number``: as the processor served them when that was newest."""
        return SpecVersions(tuple(s for s in self.versions if s.version <= number))

    def version(self, number: int) -> AgentSpec | None:
        for spec in self.versions:
            if spec.version == number:
                return spec
        return None


@dataclass(frozen=True)
class Catalog:
    """The agent kinds one deployment serves, each with its versions. An agent is bound to its
    kind by its first input; an input naming no kind gets ``default`` (the first kind given)."""

    kinds: tuple[SpecVersions, ...]

    def __post_init__(self) -> None:
        if not self.kinds:
            raise ConfigurationError("no agent spec given")
        names = [k.newest.name for k in self.kinds]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"an agent kind given twice: {names}")
        for versions in self.kinds:
            for spec in versions.versions:
                for t in spec.tools:
                    if t.target is not None and t.target not in names:
                        raise ConfigurationError(
                            f"agent {spec.label}: tool {t.name} names kind {t.target!r}, "
                            f"which this deployment does not serve (it serves {names})",
                            hint="pass that kind's spec too (--spec once per kind)",
                        )

    @classmethod
    def of(
        cls, specs: AgentSpec | SpecVersions | Catalog | Iterable[AgentSpec | SpecVersions]
    ) -> Catalog:
        """A catalog of one spec, one spec's versions, or several (grouped by name, in the
        order of their first appearance)."""
        if isinstance(specs, Catalog):
            return specs
        if isinstance(specs, AgentSpec | SpecVersions):
            return cls((SpecVersions.of(specs),))
        grouped: dict[str, list[AgentSpec]] = {}
        for item in specs:
            for spec in SpecVersions.of(item).versions:
                grouped.setdefault(spec.name, []).append(spec)
        return cls(tuple(SpecVersions(tuple(v)) for v in grouped.values()))

    @property
    def default(self) -> SpecVersions:
        return self.kinds[0]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.newest.name for k in self.kinds)

    def kind(self, name: str | None) -> SpecVersions | None:
        """The versions of kind ``name`` (the default for None); None when not served."""
        if name is None:
            return self.default
        for versions in self.kinds:
            if versions.newest.name == name:
                return versions
        return None

    @property
    def specs(self) -> tuple[AgentSpec, ...]:
        """Every version of every kind (what the workers load tools and models from)."""
        return tuple(s for k in self.kinds for s in k.versions)
