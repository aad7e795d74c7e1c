"""ruff and mypy --strict over the project, so a red lint is a red build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("schemas", "streams", "processors", "projections", "tools")


def _run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=cwd, capture_output=True, text=True)


def test_ruff_lint_is_clean() -> None:
    done = _run("ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_is_clean() -> None:
    done = _run("ruff", "format", "--check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    # mypy does not run setuptools' editable import hooks, so give it the installed layout:
    # agentstream/<folder> links to each top-level folder.
    namespace = tmp_path / "agentstream"
    namespace.mkdir()
    for folder in PACKAGES:
        (namespace / folder).symlink_to(ROOT / folder, target_is_directory=True)
    done = _run(
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(tmp_path / ".mypy_cache"),
        "-p",
        "agentstream",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
