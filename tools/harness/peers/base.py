"""What the runner needs of a system under test, and the shared helpers for telling whether a
peer's packages and binaries are there."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from agentstream.schemas.errors import AgentStreamError

NOT_INSTALLED = "not installed"


class PeerError(AgentStreamError):
    """A peer could not be started, or a run on it did not give the expected result."""


class Peer(Protocol):
    """One system that runs the 3-step agent run.

    ``start`` may block the event loop: children spawned from another thread would be killed
    when that thread ends (a parent-death signal belongs to the spawning thread), and nothing
    else runs while a peer starts.
    """

    #: Short name shown in the table and used as the JSON key.
    name: str

    def version(self) -> str:
        """The versions that matter, e.g. ``"dbos 3.4.0, PostgreSQL 18.1"``."""
        ...

    def available(self) -> str | None:
        """None when it can run here, else why not and what to install."""
        ...

    async def start(self, workdir: Path) -> None:
        """Start everything the peer needs, with its state under ``workdir`` (fresh each time)."""
        ...

    async def submit(self, run_id: str) -> Any:
        """Run the 3-step run ``run_id`` to its end and return its result."""
        ...

    async def stop(self) -> None:
        """Stop everything ``start`` started; safe after a failed or partial start."""
        ...

    def pids(self) -> list[int]:
        """The processes it started (their descendants are counted too)."""
        ...


def missing_distributions(*names: str) -> list[str]:
    """The distributions of ``names`` (as pip names them) that are not installed; nothing of
    them is imported."""
    return [name for name in names if dist_version(name) == NOT_INSTALLED]


def dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def not_installed(what: list[str], install: str) -> str:
    return f"{NOT_INSTALLED}: {', '.join(what)} missing; {install}"
