"""`agentstream dev up` and `agentstream demo` as a user runs them: real subprocesses."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from agentstream.streams.runtime.settings import agentstream_home
from agentstream.tools.devstack.stack_process import free_loopback_port

pytestmark = pytest.mark.integration

READY = re.compile(
    r"stack(?: \(agent kinds: (?P<kinds>[^)]*)\))? ready in (?P<secs>[\d.]+)s: "
    r"AGENTSTREAM_BOOTSTRAP_SERVERS=(?P<bootstrap>\S+) AGENTSTREAM_DATABASE_URL=(?P<db>\S+)"
)
TEAM = "agentstream.processors.examples:team"


def _cli() -> list[str]:
    exe = shutil.which("agentstream", path=str(Path(sys.executable).parent))
    assert exe, "the agentstream console script is not installed next to this Python"
    return [exe]


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env["AGENTSTREAM_HOME"] = str(home)
    env["COLUMNS"] = "300"
    # A fresh home, but Apache Kafka's jars from the cache every run shares.
    shared = agentstream_home() / "kafka"
    shared.mkdir(parents=True, exist_ok=True)
    if not (home / "kafka").exists():
        (home / "kafka").symlink_to(shared, target_is_directory=True)
    return env


def _ready_timeout(broker_kind: str) -> float:
    # Apache Kafka's first start on a machine resolves its jars from Maven Central first.
    return 180.0 if broker_kind == "kafka" else 60.0


def _broker(broker_kind: str) -> list[str]:
    """The --broker switch for the broker under test (a configured one: the default stack)."""
    return ["--broker", "kafka" if broker_kind == "kafka" else "embedded"]


def _read_line_matching(
    proc: subprocess.Popen[str], pattern: re.Pattern[str], timeout: float
) -> re.Match[str]:
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if selector.select(timeout=0.2):
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            match = pattern.search(line)
            if match:
                return match
    raise AssertionError(f"no line matching {pattern.pattern!r} within {timeout}s: {seen}")


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        # a process may end between two questions; gone is gone
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def _wait_gone(procs: list[psutil.Process], timeout: float = 20) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(procs)


def test_dev_up_is_ready_usable_and_stops_on_ctrl_c(tmp_path: Path, broker_kind: str) -> None:
    # A metrics port meant for one service must not make the others fail to bind it.
    env = {**_clean_env(tmp_path), "AGENTSTREAM_METRICS_PORT": str(free_loopback_port())}
    proc = subprocess.Popen(
        [*_cli(), "dev", "up", *_broker(broker_kind)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    children: list[psutil.Process] = []
    try:
        ready = _read_line_matching(proc, READY, timeout=_ready_timeout(broker_kind))
        assert ready["kinds"] == "support"
        children = psutil.Process(proc.pid).children(recursive=True)
        record = (tmp_path / "dev-stack.json").read_text()
        assert ready["bootstrap"] in record
        with psycopg.connect(ready["db"], connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert len(children) >= 2
    assert _wait_gone(children) == []
    assert not (tmp_path / "dev-stack.json").exists()


def test_dev_up_children_die_with_it_even_on_sigkill(tmp_path: Path, broker_kind: str) -> None:
    # a catalog of kinds, and one more spec beside it: every kind served is named when ready
    specs = ["--spec", TEAM, "--spec", "agentstream.processors.examples:support_agent"]
    proc = subprocess.Popen(
        [*_cli(), "dev", "up", *specs, *_broker(broker_kind)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_clean_env(tmp_path),
    )
    children: list[psutil.Process] = []
    try:
        ready = _read_line_matching(proc, READY, timeout=_ready_timeout(broker_kind))
        assert ready["kinds"] == "triage, orders, policy, refunds, support"
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert len(children) >= 2
    survivors = _wait_gone(children)
    for survivor in survivors:  # never leave them running, even when the assertion fails
        with contextlib.suppress(psutil.NoSuchProcess):
            survivor.kill()
    assert survivors == []


def _foreign_stack_processes() -> set[int]:
    """Broker, PostgreSQL, registry and service processes that are not this session's own."""
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    found = set()
    for proc in psutil.process_iter(["name", "cmdline"]):
        name = proc.info["name"] or ""
        cmdline = " ".join(proc.info["cmdline"] or [])
        ours_too = any(
            part in cmdline
            for part in ("agentstream.tools.cli.app", "registry.server", "kafka.Kafka")
        )
        if (name.startswith("tansu") or name == "postgres" or ours_too) and proc.pid not in ours:
            found.add(proc.pid)
    return found


def test_demo_runs_the_support_agent_end_to_end_and_leaves_nothing(
    tmp_path: Path, broker_kind: str
) -> None:
    before = _foreign_stack_processes()
    done = subprocess.run(
        [*_cli(), "demo", *_broker(broker_kind)],
        capture_output=True,
        text=True,
        env={**_clean_env(tmp_path), "COLUMNS": "200"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for agent in ("customer-ana", "customer-ben", "customer-cho"):
        assert any(agent in line and "RunCompleted" in line for line in lines), done.stdout
    assert any("ApprovalRequested: issue_refund" in line for line in lines)
    assert any("ApprovalGranted: granted by demo-operator" in line for line in lines)
    assert done.stdout.count("completed") >= 4  # the outcome table
    # the follow-up names no order: the model got the first run from memory, and answers it
    assert "customer-ana's follow-up" in done.stdout
    assert "user: Where is my order o-1001?" in done.stdout
    assert done.stdout.count('"carrier":"DHL"') >= 2
    assert "audit timeline of customer-ben" in done.stdout
    assert "everything stopped" in done.stdout
    # The screen is for people: the command's own logs (librdkafka's included) went to a file.
    assert '"level"' not in done.stdout + done.stderr
    assert "%3|" not in done.stderr
    assert "migrations_applied" in (tmp_path / "logs" / "demo.log").read_text()
    new: list[psutil.Process] = []
    for pid in _foreign_stack_processes() - before:
        with contextlib.suppress(psutil.NoSuchProcess):
            new.append(psutil.Process(pid))
    leaked = _wait_gone(new)
    assert leaked == []


_REFUND = "Order o-1003 arrived broken, please refund it."
ROW = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (?P<agent>\S+) +(?P<kind>\S+) +(?P<what>.*)$")


def _rows(stdout: str) -> list[tuple[str, str, str]]:
    """The event rows of the demo: (agent, its kind, what happened)."""
    return [(m["agent"], m["kind"], m["what"]) for m in map(ROW.match, stdout.splitlines()) if m]


def _said(rows: list[tuple[str, str, str]], agent: str, kind: str, starts: str) -> list[str]:
    return [what for a, k, what in rows if (a, k) == (agent, kind) and what.startswith(starts)]


def test_demo_team_delegates_in_parallel_hands_off_and_approves_in_the_child(
    tmp_path: Path, broker_kind: str
) -> None:
    # the same stack as the demo's, started and stopped the same way: what it leaves is checked
    # there
    done = subprocess.run(
        [*_cli(), "demo", "--team", *_broker(broker_kind)],
        capture_output=True,
        text=True,
        env={**_clean_env(tmp_path), "COLUMNS": "200"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    shown = done.stdout
    rows = _rows(shown)
    # ana's question: triage asks the orders and the policy agent in one reply, and answers with
    # what both of them answered
    asked = _said(rows, "customer-ana", "triage", "ModelCallCompleted: asks for")
    assert asked[:1] == ["ModelCallCompleted: asks for ask_orders, ask_policy"], shown
    for child, kind in (("customer-ana/orders", "orders"), ("customer-ana/policy", "policy")):
        assert _said(rows, child, kind, "AgentInput:"), shown
        assert _said(rows, child, kind, "RunCompleted:"), shown
        returned = _said(rows, "customer-ana", "triage", f"DelegationReturned: {child} ")
        assert len(returned) == 1 and "completed" in returned[0], shown
    answer = " ".join(_said(rows, "customer-ana", "triage", "RunCompleted:"))
    assert "Order o-1001 is shipped, carrier DHL" in answer, shown
    assert "returned within 30 days" in answer, shown
    # ben's refund: handed off, and approved in the agent it was handed to
    handed = _said(rows, "customer-ben", "triage", "RunHandedOff:")
    assert handed == [f"RunHandedOff: to customer-ben/refunds: “{_REFUND}”"], shown
    refunds = ("customer-ben/refunds", "refunds")
    assert _said(rows, *refunds, "ApprovalRequested: issue_refund"), shown
    assert _said(rows, *refunds, "ApprovalGranted: granted by demo-operator"), shown
    assert _said(rows, *refunds, "RunCompleted: “Refunded 9900 cents for order o-1003.”"), shown
    assert not _said(rows, "customer-ben", "triage", "ApprovalRequested"), shown
    # every run ended: four completed and one handed off, in the table and in the trees
    table = [line for line in shown.splitlines() if line.startswith("│ customer-")]
    outcomes = sorted(line.split("│")[4].strip() for line in table)
    assert outcomes == ["completed"] * 4 + ["handed_off"], shown
    for branch in (
        "delegated to customer-ana/orders (orders) — completed",
        "delegated to customer-ana/policy (policy) — completed",
        "customer-ben (triage) — handed_off",
        "handed off to customer-ben/refunds (refunds) — completed",
    ):
        assert branch in shown, shown
    assert "everything stopped" in shown
    assert '"level"' not in shown + done.stderr


def test_malformed_setting_is_one_actionable_line(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    env["AGENTSTREAM_BOOTSTRAP_SERVERS"] = "not a host"
    done = subprocess.run([*_cli(), "demo"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "AGENTSTREAM_BOOTSTRAP_SERVERS" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--nope"], "No such option: --nope"),
        (["approvals", "approve", "c-1"], "Missing option '--approver'"),
        (["send", "hi", "--agent"], "Option '--agent' requires an argument"),
    ],
)
def test_usage_errors_are_a_usage_line_not_a_traceback(
    tmp_path: Path, argv: list[str], says: str
) -> None:
    done = subprocess.run(
        [*_cli(), *argv], capture_output=True, text=True, env=_clean_env(tmp_path), timeout=60
    )
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
