"""`agentstream send` and `agentstream tail` as a user runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from harness import cli_env, read_to_end

from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import INPUTS, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def isolated(settings: Settings) -> Settings:
    isolated = settings.model_copy(update={"topic_prefix": f"cli{uuid.uuid4().hex[:6]}."})
    ensure_topics(isolated)
    return isolated


@pytest.fixture
def env(isolated: Settings, tmp_path: Path) -> dict[str, str]:
    return cli_env(isolated, tmp_path)


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("agentstream", path=str(Path(sys.executable).parent))
    assert exe
    return subprocess.run(
        [exe, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )


def test_send_text_and_json_lines_then_tail_them(env: dict[str, str]) -> None:
    one = run(env, "send", "--agent", "support-1", "--meta", "channel=email", "Where is o-1?")
    assert one.returncode == 0, one.stderr
    assert "sent " in one.stdout and "to support-1" in one.stdout
    lines = "\n".join(json.dumps({"agent_id": f"bulk-{i}", "text": f"q{i}"}) for i in range(3))
    bulk = run(env, "send", stdin=lines + "\n")
    assert bulk.returncode == 0, bulk.stderr
    assert bulk.stdout.count("sent ") == 3

    tailed = run(env, "tail", "agent.inputs", "--from-beginning", "--limit", "4", "--json")
    assert tailed.returncode == 0, tailed.stderr
    events = [json.loads(line) for line in tailed.stdout.splitlines()]
    assert sorted(e["event"]["envelope"]["agent_id"] for e in events) == [
        "bulk-0",
        "bulk-1",
        "bulk-2",
        "support-1",
    ]
    first = next(e for e in events if e["event"]["envelope"]["agent_id"] == "support-1")
    assert first["event"]["metadata"] == {"channel": "email"}
    assert first["type"] == "AgentInput"

    only = run(env, "tail", "--from-beginning", "--limit", "1", "--agent", "bulk-2", "--json")
    assert json.loads(only.stdout)["event"]["text"] == "q2"


def test_a_bad_line_sends_nothing_and_says_which(env: dict[str, str], isolated: Settings) -> None:
    lines = '{"agent_id": "fine", "text": "ok"}\n{"agent_id": "not fine", "text": "x"}\n'
    bad = run(env, "send", stdin=lines)
    assert bad.returncode == 1
    assert "stdin line 2" in bad.stderr and "agent_id" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert read_to_end(isolated, [INPUTS]) == [], "all or nothing"


def test_usage_errors_are_one_line(env: dict[str, str]) -> None:
    no_agent = run(env, "send", "hello")
    assert no_agent.returncode == 1 and "--agent is required" in no_agent.stderr
    unknown = run(env, "tail", "agent.nope")
    assert unknown.returncode == 1 and "unknown topic" in unknown.stderr
