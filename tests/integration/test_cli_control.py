"""The steering commands as an operator runs them (`agentstream runs cancel`, `agents pause|resume`,
`memory remember|erase`, `callbacks complete`): each puts its event, keyed by the agent, on
agent.control once the broker has it; a usage error exits 2 and sends nothing."""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from console_support import read_keyed
from harness import cli_env
from typer.testing import CliRunner

from agentstream.schemas.events import (
    AgentPaused,
    AgentResumed,
    CallbackCompleted,
    Event,
    MemoryErased,
    MemoryRecorded,
    RunCancelRequested,
)
from agentstream.schemas.limits import MAX_RESULT_BYTES
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import CONTROL, ensure_topics
from agentstream.tools.cli.app import app

pytestmark = pytest.mark.integration

AGENT = "support-7"


@pytest.fixture
def isolated(settings: Settings) -> Settings:
    isolated = settings.model_copy(update={"topic_prefix": f"ctl{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    return isolated


@pytest.fixture
def env(isolated: Settings, tmp_path: Path) -> dict[str, str]:
    return cli_env(isolated, tmp_path)


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("agentstream", path=str(Path(sys.executable).parent))
    assert exe
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)


def sent(env: dict[str, str], *args: str) -> str:
    """Run a command that must succeed; its one line of output."""
    done = run(env, *args)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert "{" not in line, "a human line, not a JSON log"
    return line


def control(settings: Settings) -> list[tuple[Event, str | None]]:
    records = read_keyed(settings, [CONTROL])
    assert all(isinstance(r, Event) for r, _ in records), records
    return [(r, k) for r, k in records if isinstance(r, Event)]


def test_each_command_puts_its_event_on_agent_control(
    env: dict[str, str], isolated: Settings, tmp_path: Path
) -> None:
    result_file = tmp_path / "result.json"
    result_file.write_text('{"status": "shipped", "parcels": [1, 2]}', encoding="utf-8")
    lines = [
        sent(env, "runs", "cancel", "run-1", "--agent", AGENT, "--reason", "wrong order",
             "--by", "bob"),
        sent(env, "agents", "pause", AGENT, "--reason", "incident 42", "--by", "bob"),
        sent(env, "agents", "resume", AGENT, "--by", "bob", "--tenant", "acme"),
        sent(env, "memory", "remember", AGENT, "language", "Dutch", "--by", "bob"),
        sent(env, "memory", "erase", AGENT, "language", "--reason", "asked", "--by", "bob"),
        sent(env, "memory", "erase", AGENT, "--all", "--by", "bob"),
        sent(env, "callbacks", "complete", "cb-1", "--agent", AGENT, "--result", '"done"'),
        sent(env, "callbacks", "complete", "cb-2", "--agent", AGENT,
             "--result-file", str(result_file), "--by", "bob"),
    ]  # fmt: skip

    records = control(isolated)
    assert len(records) == len(lines)
    for (event, key), line in zip(records, lines, strict=True):
        assert key == AGENT
        assert event.envelope.agent_id == AGENT
        assert event.envelope.source == "cli"
        assert event.envelope.event_id in line, line
    events = [event for event, _ in records]

    cancel, pause, resume, remember, erase_one, erase_all, done, shipped = events
    assert isinstance(cancel, RunCancelRequested)
    assert (cancel.envelope.run_id, cancel.requested_by, cancel.reason) == (
        "run-1",
        "bob",
        "wrong order",
    )
    assert "cancel of run run-1 of support-7 requested by bob" in lines[0]
    assert isinstance(pause, AgentPaused)
    assert (pause.requested_by, pause.reason, pause.envelope.run_id) == ("bob", "incident 42", None)
    assert isinstance(resume, AgentResumed)
    assert (resume.requested_by, resume.envelope.tenant_id) == ("bob", "acme")
    assert pause.envelope.tenant_id == "default"
    assert isinstance(remember, MemoryRecorded)
    assert (remember.key, remember.value, remember.recorded_by) == ("language", "Dutch", "bob")
    assert isinstance(erase_one, MemoryErased)
    assert (erase_one.key, erase_one.reason, erase_one.requested_by) == ("language", "asked", "bob")
    assert isinstance(erase_all, MemoryErased)
    assert erase_all.key is None
    assert isinstance(done, CallbackCompleted)
    # without --by, the operating-system user asks
    assert (done.callback_id, done.result_json, done.completed_by) == (
        "cb-1",
        '"done"',
        getpass.getuser(),
    )
    assert isinstance(shipped, CallbackCompleted)
    assert shipped.callback_id == "cb-2"
    assert json.loads(shipped.result_json) == {"status": "shipped", "parcels": [1, 2]}


def test_usage_errors_exit_2_say_why_and_send_nothing(
    env: dict[str, str], isolated: Settings, tmp_path: Path
) -> None:
    too_large = tmp_path / "large.json"
    too_large.write_text(json.dumps("x" * MAX_RESULT_BYTES), encoding="utf-8")
    cases = [
        (["memory", "erase", AGENT], "pass --all"),
        (["memory", "erase", AGENT, "language", "--all"], "not both"),
        (["memory", "remember", AGENT, "", "Dutch"], "KEY"),
        (["runs", "cancel", "run-1"], "--agent"),
        (["runs", "cancel", "run-1", "--agent", "not fine"], "--agent"),
        (["agents", "pause", AGENT, "--by", " "], "--by"),
        (["callbacks", "complete", "cb-1", "--agent", AGENT], "exactly one of"),
        (
            ["callbacks", "complete", "cb-1", "--agent", AGENT, "--result", "1",
             "--result-file", str(too_large)],
            "exactly one of",
        ),
        (["callbacks", "complete", "cb-1", "--agent", AGENT, "--result", "{oops"], "not JSON"),
        (["callbacks", "complete", "cb-1", "--agent", AGENT, "--result", "NaN"], "not JSON"),
        (
            ["callbacks", "complete", "cb-1", "--agent", AGENT, "--result-file", str(too_large)],
            f"over the {MAX_RESULT_BYTES:,}-byte limit",
        ),
        (
            ["callbacks", "complete", "cb-1", "--agent", AGENT, "--result-file",
             str(tmp_path / "missing.json")],
            "cannot read",
        ),
    ]  # fmt: skip
    for args, why in cases:
        done = run(env, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert why in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
        assert done.stdout == ""
    assert control(isolated) == []


def test_every_steering_command_has_help() -> None:
    # in process: the help of a command is the same there, and 7 interpreters cost 10 s
    runner = CliRunner()
    for group, commands in {
        "runs": ["cancel"],
        "agents": ["pause", "resume"],
        "memory": ["remember", "erase"],
        "callbacks": ["complete"],
    }.items():
        listed = runner.invoke(app, [group, "--help"], terminal_width=200)
        assert listed.exit_code == 0, listed.output
        for command in commands:
            assert command in listed.output
            shown = runner.invoke(app, [group, command, "--help"], terminal_width=200)
            assert shown.exit_code == 0, shown.output
            assert "--by" in shown.output and "--tenant" in shown.output
