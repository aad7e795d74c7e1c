"""Load user objects named as ``package.module:attribute`` (like uvicorn's app paths)."""

from __future__ import annotations

import importlib
from typing import Any

from agentstream.processors.core.spec import AgentSpec
from agentstream.schemas.errors import ConfigurationError

__all__ = [
    "DEFAULT_SPEC",
    "load_object",
    "load_spec",
]

DEFAULT_SPEC = "agentstream.processors.examples:support_agent"


def load_object(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{path!r} is not of the form package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import {module_name!r}: {exc}", hint="check the module path and PYTHONPATH"
        ) from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}") from None


def load_spec(path: str) -> AgentSpec:
    """An AgentSpec, or a zero-argument callable returning one."""
    found = load_object(path)
    if callable(found) and not isinstance(found, AgentSpec):
        found = found()
    if not isinstance(found, AgentSpec):
        raise ConfigurationError(f"{path} is a {type(found).__name__}, not an AgentSpec")
    return found
