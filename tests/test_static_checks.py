"""ruff and mypy --strict over the project, so a red lint is a red build; and the architecture's
rules on who may import what."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
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


# -- the architecture, as imports ------------------------------------------------------------

#: What the pure core may not touch: clients of Kafka, Faust, databases, HTTP, the clock and
#: chance, the processes and files of the machine.
IMPURE = (
    "confluent_kafka",
    "faust",
    "aiokafka",
    "mode",
    "psycopg",
    "httpx",
    "starlette",
    "uvicorn",
    "socket",
    "time",
    "random",
    "secrets",
    "asyncio",
    "threading",
    "subprocess",
    "os",
    "pathlib",
)
#: Calls that read the clock or chance even through an allowed module (``datetime``, ``uuid``).
IMPURE_CALLS = ("now", "utcnow", "today", "uuid1", "uuid4")


@dataclass(frozen=True)
class Module:
    name: str  # agentstream.processors.core.machine
    package: str  # agentstream.processors.core
    path: Path
    tree: ast.Module


def _modules() -> list[Module]:
    found = []
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = ["agentstream", *path.relative_to(ROOT).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            name = ".".join(parts)
            package = name if is_package else ".".join(parts[:-1])
            found.append(Module(name, package, path, ast.parse(path.read_text())))
    return found


def _imports(module: Module, names: set[str]) -> set[str]:
    """Every module ``module`` imports, at the top or inside a function, as full names."""
    out: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            inner = {f"{node.module}.{a.name}" for a in node.names} & names
            out |= inner or {node.module}
    return out


def test_the_pure_core_does_no_io_and_reads_no_clock() -> None:
    modules = _modules()
    names = {m.name for m in modules}
    core = [m for m in modules if m.package == "agentstream.processors.core"]
    assert len(core) >= 4, "the pure core moved; point this test at it"
    problems = []
    for module in core:
        for name in _imports(module, names):
            top = name.split(".")[0]
            if top in IMPURE:
                problems.append(f"{module.name} imports {name}")
            elif top == "agentstream" and not name.startswith(
                ("agentstream.schemas", "agentstream.processors.core")
            ):
                problems.append(f"{module.name} imports {name}, outside the core and the contract")
        for node in ast.walk(module.tree):
            called = node.func if isinstance(node, ast.Call) else None
            if isinstance(called, ast.Attribute) and called.attr in IMPURE_CALLS:
                problems.append(f"{module.name}:{node.lineno} calls .{called.attr}()")
    assert problems == []


def test_streams_is_kafka_wiring_below_everything_else() -> None:
    modules = _modules()
    names = {m.name for m in modules}
    problems = [
        f"{m.name} imports {name}"
        for m in modules
        if m.name.startswith("agentstream.streams")
        for name in _imports(m, names)
        if name.startswith(
            ("agentstream.processors", "agentstream.projections", "agentstream.tools")
        )
    ]
    assert problems == []


def test_no_import_cycles_between_subpackages() -> None:
    modules = _modules()
    names = {m.name for m in modules}
    package_of = {m.name: m.package for m in modules}
    edges: dict[str, set[str]] = {}
    for module in modules:
        for name in _imports(module, names):
            target = package_of.get(name, name)
            # A package's own modules and the package it sits in (its errors, its examples)
            # are one unit; an edge only between unrelated subpackages or towards a parent.
            if name.startswith("agentstream.") and target != module.package:
                edges.setdefault(module.package, set()).add(target)

    def path(start: str, goal: str) -> list[str] | None:
        todo, seen = [[start]], {start}
        while todo:
            trail = todo.pop()
            for step in sorted(edges.get(trail[-1], ())):
                if step == goal:
                    return [*trail, step]
                if step not in seen:
                    seen.add(step)
                    todo.append([*trail, step])
        return None

    cycles = {
        " -> ".join(found)
        for package, targets in edges.items()
        for target in targets
        if (found := path(target, package)) is not None
    }
    assert sorted(cycles) == []


def test_library_modules_say_what_they_export() -> None:
    """``__all__`` on every module of the library packages: the public API is a choice."""
    library = tuple(f"agentstream.{p}" for p in PACKAGES if p != "tools")
    missing = [
        m.name
        for m in _modules()
        if m.name.startswith(library)
        and m.path.name != "__init__.py"
        and not any(
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
            for node in m.tree.body
        )
    ]
    assert missing == []
