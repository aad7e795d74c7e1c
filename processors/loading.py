"""Load user objects named as ``package.module:attribute`` (like uvicorn's app paths)."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from agentstream.processors.core.spec import AgentSpec, Catalog, SpecVersions
from agentstream.schemas.errors import ConfigurationError

__all__ = [
    "DEFAULT_SPEC",
    "load_catalog",
    "load_object",
    "load_spec",
    "load_specs",
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
    """An AgentSpec, or a zero-argument callable returning one; for several versions, the
    newest."""
    return load_specs([path]).newest


def _specs_at(path: str) -> list[AgentSpec]:
    """The AgentSpecs one path names: an AgentSpec, a SpecVersions, a Catalog, a list or tuple
    of AgentSpecs, or a zero-argument callable returning one of those."""
    obj = load_object(path)
    if callable(obj) and not isinstance(obj, AgentSpec):
        obj = obj()
    if isinstance(obj, Catalog):
        obj = obj.specs
    if isinstance(obj, SpecVersions):
        obj = obj.versions
    items = list(obj) if isinstance(obj, list | tuple) else [obj]
    for item in items:
        if not isinstance(item, AgentSpec):
            raise ConfigurationError(f"{path} holds a {type(item).__name__}, not an AgentSpec")
    return items


def load_catalog(paths: Iterable[str]) -> Catalog:
    """Every agent kind the paths name, with its versions (specs of the same name are versions
    of one kind). The first kind named is the default, for inputs that name none."""
    paths = list(paths)
    found = [spec for path in paths for spec in _specs_at(path)]
    try:
        return Catalog.of(found)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{', '.join(paths)}: {exc}", hint=exc.hint or "give each version its own number"
        ) from None


def load_specs(paths: Iterable[str]) -> SpecVersions:
    """The versions of one agent, from one or several paths (see :func:`load_catalog`)."""
    paths = list(paths)
    found = [spec for path in paths for spec in _specs_at(path)]
    try:
        return SpecVersions(tuple(found))
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{', '.join(paths)}: {exc}",
            hint="give the versions of one agent, each with its own version number",
        ) from None
