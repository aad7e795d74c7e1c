"""The operator console in a real browser: headless Chromium (driven by Playwright) approves a
refund the support agent asked for, and the run completes; the processor, the tool and model
workers and the projector run as services on the real broker and PostgreSQL.

The same run shows the trace context crossing every hop (the input came through the HTTP
ingress with a ``traceparent``) and the workers' metrics counting its calls. Another run, waiting
for its approval, is cancelled with the console's button, and its agent paused and resumed.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from console_support import RunTree, ServedApp, read_keyed, read_with_headers, wait_until
from harness import ServiceProcess
from playwright.sync_api import Browser, Page, sync_playwright
from projection_support import DirectFeed, TeamWorld, drop_schemas, fresh_schema
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from agentstream.projections.migrate import migrate
from agentstream.schemas.events import (
    AgentPaused,
    AgentResumed,
    ApprovalGranted,
    Event,
    ModelCallCompleted,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    ToolCallCompleted,
)
from agentstream.streams.runtime import tracing
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import CONTROL, OUTCOMES, TOPICS, ensure_topics
from agentstream.tools.console.app import Console, create_console_app
from agentstream.tools.devstack.stack_process import free_loopback_port

pytestmark = pytest.mark.integration

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USER, PASSWORD, TOKEN = "alice", "pw-" + uuid.uuid4().hex, "tok-" + uuid.uuid4().hex
TRACE_ID = uuid.uuid4().hex
TRACEPARENT = f"00-{TRACE_ID}-{uuid.uuid4().hex[:16]}-01"


@dataclass
class Stack:
    settings: Settings
    url: str
    services: dict[str, ServiceProcess]
    metrics: dict[str, str]

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.log_tail(12)}" for n, p in self.services.items())


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail(
            "no Chromium found for the browser test: install Debian's package with "
            "`apt-get install -y chromium` (Playwright's own browser download is not used)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prefix = f"c{uuid.uuid4().hex[:6]}"
    isolated = settings.model_copy(
        update={
            "topic_prefix": f"{prefix}.",
            "console_username": USER,
            "console_password": SecretStr(PASSWORD),
            "console_token": SecretStr(TOKEN),
        }
    )
    ensure_topics(isolated)
    migrate(isolated.require_database_url(), prefix)
    logs = tmp_path_factory.mktemp("console-logs")
    ports = {name: free_loopback_port() for name in ("tools", "models")}

    def service(name: str, *args: str) -> ServiceProcess:
        return ServiceProcess([*args, "--group", f"{prefix}-{name}"], isolated, logs, name)

    services = {
        "processor": service("processor", "processor", "run"),
        "tools": service("tools", "worker", "tools", "run", "--metrics-port", str(ports["tools"])),
        "models": service(
            "models", "worker", "models", "run", "--metrics-port", str(ports["models"])
        ),
        "projector": service("projector", "projections", "run", "--schema", prefix),
    }
    for process in services.values():
        process.start()
    try:
        services["processor"].wait_for_log("partitions_restored")
        services["tools"].wait_for_log("worker_started")
        services["models"].wait_for_log("worker_started")
        services["projector"].wait_for_log("partitions_assigned")
        app = create_console_app(Console(isolated, schema=prefix))
        with ServedApp(app) as served:
            yield Stack(
                isolated,
                served.url,
                services,
                {n: f"http://127.0.0.1:{p}" for n, p in ports.items()},
            )
        for name, process in services.items():
            assert process.terminate() == 0, f"{name}\n{process.log_tail()}"
    finally:
        for process in services.values():
            process.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


def reload_until(page: Page, url: str, selector: str, what: str, timeout: float = 45) -> None:
    """The read models lag the topics a little: reload until ``selector`` shows up."""

    def present() -> bool:
        page.goto(url)
        return page.locator(selector).count() > 0

    wait_until(what, present, timeout=timeout, every=0.5)


def test_an_operator_approves_a_refund_in_the_browser_and_the_run_completes(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    agent = f"console-ben-{uuid.uuid4().hex[:6]}"
    sent = httpx.post(
        f"{stack.url}/api/inputs",
        json={"agent_id": agent, "text": "Order o-1003 arrived broken, please refund it."},
        headers={"Authorization": f"Bearer {TOKEN}", "traceparent": TRACEPARENT},
        timeout=30,
    )
    assert sent.status_code == 202, sent.text
    assert sent.json()["trace_id"] == TRACE_ID

    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
    page = context.new_page()
    try:
        row = f"#approvals tr:has(a:text('{agent}'))"
        reload_until(page, f"{stack.url}/approvals", row, "the refund in the approvals inbox")
        assert page.locator(f"{row} td").nth(1).inner_text() == "issue_refund"
        assert '"order_id": "o-1003"' in page.locator(f"{row} pre").inner_text()
        assert page.locator(f"{row} td").nth(4).inner_text() != ""  # the deadline
        page.locator(f"{row} button.approve").click()
        page.locator(f"{row} .status").filter(has_text="approved by alice").wait_for()

        completed = f"#runs tr[data-status='completed']:has(td:text('{agent}'))"
        reload_until(page, f"{stack.url}/runs?status=completed", completed, "the completed run")
        page.goto(f"{stack.url}/runs?status=running")
        assert page.locator(f"#runs tr:has(td:text('{agent}'))").count() == 0
        page.goto(f"{stack.url}/runs?status=completed")
        assert page.locator(f"#runs tr:has(td:text('{agent}'))").count() == 1

        page.locator(f"{completed} a").first.click()
        page.locator("#timeline tr[data-type='RunCompleted']").wait_for()
        types = page.locator("#timeline tr[data-type]").evaluate_all(
            "rows => rows.map(r => r.dataset.type)"
        )
        assert types[0] == "AgentInput" and types[-1] == "RunCompleted", types
        assert {"ApprovalRequested", "ApprovalGranted", "ToolCallCompleted"} <= set(types)
        tool_row = page.locator("#timeline tr[data-type='ToolCallCompleted']").first
        assert tool_row.locator("td").nth(5).inner_text().isdigit()  # latency in ms
        model_row = page.locator("#timeline tr[data-type='ModelCallCompleted']").first
        assert model_row.locator("td").nth(6).inner_text() != ""  # tokens
        screenshot = tmp_path / "timeline.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 1000
    finally:
        context.close()

    check_the_run_is_one_trace(stack, agent)
    check_worker_metrics(stack, agent)


def check_the_run_is_one_trace(stack: Stack, agent: str) -> None:
    """Every event of the run carries the ingress request's trace id, except the decision a
    person sent (no header); the processor puts what follows it back into the run's trace."""
    records = [
        (r, h)
        for r, h in read_with_headers(stack.settings, list(TOPICS))
        if isinstance(r, Event) and r.envelope.agent_id == agent
    ]
    kinds = {type(r).__name__ for r, _ in records}
    assert {"ModelCallRequested", "ToolCallRequested", "ApprovalRequested"} <= kinds, kinds
    [decision] = [r for r, _ in records if isinstance(r, ApprovalGranted)]
    assert decision.approver == USER
    for record, headers in records:
        found = tracing.trace_id_of(tracing.traceparent_of(headers))
        expected = None if isinstance(record, ApprovalGranted) else TRACE_ID
        assert found == expected, f"{type(record).__name__}: {headers}"
    assert any(isinstance(r, RunCompleted) for r, _ in records)
    # The workers' log lines of the run's calls carry its trace id.
    lines = stack.services["tools"].log_path.read_text().splitlines()
    finished = [json.loads(x) for x in lines if '"tool_call_finished"' in x and agent in x]
    assert len(finished) == 2, lines[-10:]
    assert {line["trace_id"] for line in finished} == {TRACE_ID}


def check_worker_metrics(stack: Stack, agent: str) -> None:
    records = [r for r, _ in read_with_headers(stack.settings, list(TOPICS))]
    tools = [r for r in records if isinstance(r, ToolCallCompleted)]
    models = [r for r in records if isinstance(r, ModelCallCompleted)]
    assert {t.tool for t in tools if t.envelope.agent_id == agent} == {
        "lookup_order",
        "issue_refund",
    }

    def scrape(name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{stack.metrics[name]}/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    tool_metrics = scrape("tools")
    for tool in ("lookup_order", "issue_refund"):
        labels = (("kind", "tool"), ("name", tool), ("outcome", "ToolCallCompleted"))
        calls = sum(1 for t in tools if t.tool == tool)
        assert tool_metrics[("agentstream_call_seconds_count", labels)] == calls
        assert tool_metrics[("agentstream_breaker_state", (("kind", "tool"), ("name", tool)))] == 0
    model_metrics = scrape("models")
    prompt = sum(m.usage.prompt_tokens for m in models)
    key = ("agentstream_tokens_total", (("agent", ""), ("kind", "prompt"), ("tenant", "default")))
    assert model_metrics[key] == prompt > 0
    produced = (
        ("service", "model_worker"),
        ("topic", stack.settings.topic("agent.model-results")),
        ("type", "ModelCallCompleted"),
    )
    assert model_metrics[("agentstream_events_produced_total", produced)] == len(models)
    ready = httpx.get(f"{stack.metrics['tools']}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text


def test_an_operator_cancels_a_waiting_run_and_pauses_and_resumes_its_agent(
    stack: Stack, browser: Browser
) -> None:
    """The console's steering buttons: Cancel on a running run (one waiting for an approval),
    Pause and Resume on its agent's timeline; the processor cancels the run."""
    agent = f"console-cid-{uuid.uuid4().hex[:6]}"
    sent = httpx.post(
        f"{stack.url}/api/inputs",
        json={"agent_id": agent, "text": "Order o-1003 arrived broken, please refund it."},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert sent.status_code == 202, sent.text

    context = browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
    page = context.new_page()
    try:
        waiting = f"#approvals tr:has(a:text('{agent}'))"
        reload_until(page, f"{stack.url}/approvals", waiting, "the refund waiting for approval")
        row = f"#runs tr[data-status='running']:has(td:text('{agent}'))"
        reload_until(page, f"{stack.url}/runs?status=running", row, "the running run")
        run_id = page.locator(row).get_attribute("data-run")
        page.locator(f"{row} button.cancel").click()
        page.locator(f"{row} .status").filter(has_text=f"cancel requested by {USER}").wait_for()

        timeline = f"{stack.url}/agents/{agent}/timeline"
        page.goto(timeline)
        page.locator("#controls button.pause").click()
        status = page.locator("#controls > .status")
        status.filter(has_text=f"pause requested by {USER}").wait_for()
        # what the read models say once the processor and the projector did their part
        paused = "#agent-status:has(b:text-is('paused')):has-text('1 cancelled')"
        reload_until(page, timeline, paused, "the agent shown paused, its run cancelled")
        page.locator("#controls button.resume").click()
        status.filter(has_text=f"resume requested by {USER}").wait_for()
        resumed = "#agent-status:has(b:text-is('idle'))"
        reload_until(page, timeline, resumed, "the agent shown idle again")
    finally:
        context.close()

    def cancelled() -> list[RunCancelled]:
        return [
            r
            for r, _ in read_with_headers(stack.settings, [OUTCOMES])
            if isinstance(r, RunCancelled) and r.envelope.agent_id == agent
        ]

    [outcome] = wait_until(f"the cancel of {agent}'s run\n{stack.logs()}", cancelled)
    assert (outcome.envelope.run_id, outcome.cancelled_by) == (run_id, USER)
    steering = [
        (r, key)
        for r, key in read_keyed(stack.settings, [CONTROL])
        if isinstance(r, Event) and r.envelope.agent_id == agent
    ]
    assert [(type(r), key) for r, key in steering] == [
        (RunCancelRequested, agent),
        (AgentPaused, agent),
        (AgentResumed, agent),
    ]
    for record, _ in steering:
        assert isinstance(record, RunCancelRequested | AgentPaused | AgentResumed)
        assert record.requested_by == USER
        assert record.envelope.source == "http-ingress"


def test_the_console_shows_kinds_and_the_tree_of_each_conversation(
    env_settings: Settings, database_url: str
) -> None:
    """Runs of several agents, delegated and handed off, straight into the read models: the
    runs table and the agent's page name the kind; an agent's page shows its conversations, a
    run's page its own, each run nested under the run that started it."""
    team = TeamWorld.make(uuid.uuid4().hex[:6])
    schema = fresh_schema(database_url)
    feed = DirectFeed(database_url, schema)
    try:
        feed.feed(team.placed())
        settings = env_settings.model_copy(update={"database_url": database_url})
        with ServedApp(create_console_app(Console(settings, schema=schema))) as served:
            runs = httpx.get(f"{served.url}/runs?status=handed_off", timeout=10).text
            agent = httpx.get(f"{served.url}/agents/{team.lead}/timeline", timeout=10).text
            query = f"run_id={team.root_run(1)}"
            run = httpx.get(f"{served.url}/agents/{team.lead}/timeline?{query}", timeout=10).text
            # a delegated run's agent: its id has slashes
            child = f"{team.held}/researcher/librarian"
            nested = httpx.get(f"{served.url}/agents/{child}/timeline", timeout=10).text
    finally:
        feed.close()
        drop_schemas(database_url, schema)
    assert "<td class='kind'>triage</td><td class='run-status'>handed_off</td>" in runs
    assert "kind: <b class='kind'>triage</b>" in agent and "1 handed off" in agent
    lead = team.lead
    [first, handed] = RunTree.of(agent)
    assert first[0] == (0, lead, "completed")
    assert sorted(first[1:]) == [
        (1, f"{lead}/researcher", "completed"),
        (1, f"{lead}/writer", "completed"),
        (2, f"{lead}/researcher/librarian", "completed"),
    ]
    # depth first: the librarian right under the researcher who asked it
    agents = [a for _, a, _ in first]
    assert agents.index(f"{lead}/researcher/librarian") == agents.index(f"{lead}/researcher") + 1
    assert handed == [(0, lead, "handed_off"), (1, f"{lead}/refunds", "completed")]
    assert RunTree.of(run) == [handed]
    assert "data-type='AgentInput'" in run  # the input that started the run
    held = team.held
    [tree] = RunTree.of(nested)
    assert sorted(tree) == [
        (0, held, "running"),
        (1, f"{held}/researcher", "completed"),
        (1, f"{held}/writer", "running"),
        (2, f"{held}/researcher/librarian", "completed"),
    ]
