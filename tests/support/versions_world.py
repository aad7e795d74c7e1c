"""Specs of the memory and version tests: the support agent remembering, and two versions."""

from __future__ import annotations

import dataclasses

from world import support_spec

from agentstream.processors.core.spec import AgentSpec, Memory

__all__ = ["remembering", "v1", "v1_and_v2", "v2"]


def remembering() -> AgentSpec:
    return dataclasses.replace(support_spec(), memory=Memory(turns=3))


def v1() -> AgentSpec:
    return dataclasses.replace(support_spec(), version=1, system_prompt="Be helpful (v1).")


def v2() -> AgentSpec:
    return dataclasses.replace(support_spec(), version=2, system_prompt="Be brief (v2).")


def v1_and_v2() -> list[AgentSpec]:
    return [v1(), v2()]
