"""The operator console's HTML: plain server-rendered pages, one small script, no build step.

Everything taken from events is escaped; the pages never inline event data into the script (its
functions read ids from data attributes). The buttons post JSON, as the API takes it: a browser
does not send that cross-site without asking the server first, so no other page can press them.
"""

from __future__ import annotations

import json
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote

from agentstream.projections.inspect import TreeRun
from agentstream.projections.queries import (
    AgentRow,
    FactRow,
    PendingApproval,
    RunRow,
    RunStatus,
    TimelineEntry,
)

RUN_STATUSES: tuple[RunStatus, ...] = tuple(RunStatus)
#: the default kind of the processor that served a run: the read models cannot name it
DEFAULT_KIND = "default"

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1d2433}
nav a{margin-right:1rem}
table{border-collapse:collapse;width:100%;margin-top:1rem;font-size:.9rem}
th,td{border-bottom:1px solid #dde;padding:.35rem .5rem;text-align:left;vertical-align:top}
pre{margin:0;white-space:pre-wrap;max-width:40rem;font-size:.8rem}
.muted{color:#667}
.tree li{margin:.15rem 0}
button{margin-right:.3rem}
"""

_SCRIPT = """
async function decide(button, approve) {
  const row = button.closest('tr');
  row.querySelectorAll('button').forEach(b => b.disabled = true);
  const status = row.querySelector('.status');
  const response = await fetch('/api/approvals/' + encodeURIComponent(row.dataset.call), {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({approve: approve, arguments_hash: row.dataset.hash}),
  });
  const body = await response.json();
  status.textContent = response.ok
    ? (approve ? 'approved' : 'denied') + ' by ' + body.approver
    : 'refused: ' + body.error;
  row.dataset.state = response.ok ? 'decided' : 'error';
}
async function steer(button, path, body, done) {
  const box = button.closest('[data-agent]');
  button.disabled = true;
  const response = await fetch(path, {
    method: 'POST',
    headers: {'Content-Type': 'application/json'},
    body: JSON.stringify(Object.assign({tenant_id: box.dataset.tenant}, body)),
  });
  const answer = await response.json();
  box.querySelector('.status').textContent = response.ok
    ? done + ' by ' + answer.requested_by
    : 'refused: ' + answer.error;
  button.disabled = false;
}
function cancelRun(button) {
  const box = button.closest('[data-run]');
  const path = '/api/runs/' + encodeURIComponent(box.dataset.run) + '/cancel';
  steer(button, path, {agent_id: box.dataset.agent}, 'cancel requested');
}
function pauseAgent(button, pause) {
  const agent = button.closest('[data-agent]').dataset.agent;
  const path = '/api/agents/' + encodeURIComponent(agent) + (pause ? '/pause' : '/resume');
  steer(button, path, {}, pause ? 'pause requested' : 'resume requested');
}
"""

_CANCEL_BUTTON = "<button class='cancel' onclick='cancelRun(this)'>Cancel</button>"


def page(title: str, body: str, user: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)} · agentstream</title><style>{_STYLE}</style>"
        f"<script>{_SCRIPT}</script></head><body>"
        "<nav><a href='/approvals'>Pending approvals</a><a href='/runs'>Runs</a>"
        f"<span class='muted'>signed in as {escape(user)}</span></nav>"
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )


def approvals_body(pending: list[PendingApproval]) -> str:
    if not pending:
        return "<p id='empty'>Nothing waits for a decision.</p>"
    rows = []
    for item in pending:
        link = _timeline_link(item.agent_id, item.run_id, item.agent_id)
        full_hash = escape(item.arguments_hash or "")
        rows.append(
            f"<tr data-call='{escape(item.call_id)}' data-hash='{full_hash}'"
            f" data-state='pending'><td>{link}</td><td>{escape(item.tool or '')}</td>"
            f"<td><pre>{escape(_pretty(item.arguments))}</pre></td>"
            f"<td>{_time(item.requested_at)}</td><td>{_time(item.deadline)}</td>"
            f"<td class='muted'>{escape((item.arguments_hash or '')[:12])}</td>"
            "<td><button class='approve' onclick='decide(this, true)'>Approve</button>"
            "<button class='deny' onclick='decide(this, false)'>Deny</button>"
            "<span class='status'></span></td></tr>"
        )
    head = (
        "<tr><th>agent</th><th>tool</th><th>arguments</th><th>requested</th><th>deadline</th>"
        "<th>hash</th><th>decision</th></tr>"
    )
    return f"<table id='approvals'>{head}{''.join(rows)}</table>"


def runs_body(runs: list[RunRow], status: str | None) -> str:
    links = " ".join(
        f"<a href='/runs?status={s}'>{'<b>' + s + '</b>' if s == status else s}</a>"
        for s in RUN_STATUSES
    )
    rows = [
        f"<tr {_run_data(r)} data-status='{escape(r.status)}'>"
        f"<td>{_timeline_link(r.agent_id, r.run_id, r.run_id)}</td><td>{escape(r.agent_id)}</td>"
        f"<td class='kind'>{escape(r.kind or DEFAULT_KIND)}</td>"
        f"<td class='run-status'>{escape(r.status)}</td><td>{escape(_clip(r.input_text))}</td>"
        f"<td>{escape(_clip(r.output or r.failure_reason))}</td><td>{r.steps}</td>"
        f"<td>{r.tool_calls}</td><td>{r.prompt_tokens + r.completion_tokens}</td>"
        f"<td>{_time(r.started_at)}</td><td>{r.duration_ms if r.duration_ms is not None else ''}"
        f"</td><td>{_CANCEL_BUTTON if r.status == 'running' else ''}"
        "<span class='status'></span></td></tr>"
        for r in runs
    ]
    head = (
        "<tr><th>run</th><th>agent</th><th>kind</th><th>status</th><th>input</th><th>output</th>"
        "<th>steps</th><th>tools</th><th>tokens</th><th>started</th><th>ms</th><th></th></tr>"
    )
    return (
        f"<p>status: <a href='/runs'>{'<b>all</b>' if status is None else 'all'}</a> {links}</p>"
        f"<table id='runs'>{head}{''.join(rows)}</table>"
    )


def agent_summary(agent: AgentRow | None, facts: list[FactRow]) -> str:
    """The agent's status and what it remembers (erased facts are gone from the read models)."""
    if agent is None:
        return ""
    counts = (
        f"{agent.runs_completed} completed, {agent.runs_failed} failed, "
        f"{agent.runs_cancelled} cancelled, {agent.runs_handed_off} handed off"
    )
    remembered = "".join(
        f"<li><b>{escape(f.key)}</b> = {escape(f.value)} "
        f"<small>by {escape(f.recorded_by)}</small></li>"
        for f in facts
    )
    return (
        f"<p id='agent-status'>status: <b>{escape(agent.status)}</b> · "
        f"kind: <b class='kind'>{escape(agent.kind or DEFAULT_KIND)}</b> · runs: {counts}</p>"
        f"<details id='facts'><summary>remembers {len(facts)} fact(s)</summary>"
        f"<ul>{remembered}</ul></details>"
    )


def agent_controls(agent_id: str, tenant_id: str, running: list[RunRow]) -> str:
    """Pause and resume for the agent, and cancel for each of its running ``running`` runs."""
    agent = f"data-agent='{escape(agent_id)}' data-tenant='{escape(tenant_id)}'"
    runs = "".join(
        f"<li {_run_data(r)}>run {escape(r.run_id)} is running {_CANCEL_BUTTON}"
        "<span class='status'></span></li>"
        for r in running
    )
    return (
        f"<div id='controls' {agent}>"
        "<button class='pause' onclick='pauseAgent(this, true)'>Pause</button>"
        "<button class='resume' onclick='pauseAgent(this, false)'>Resume</button>"
        f"<span class='status'></span><ul id='running'>{runs}</ul></div>"
    )


def conversations_body(trees: list[list[TreeRun]], shown: int) -> str:
    """Each conversation as a nested list of its runs across agents: a run under the run that
    delegated or handed off to it. ``shown`` of them, the latest; the count says how many."""
    if not trees:
        return ""
    latest = trees[-shown:]
    items = "".join(f"<li>{_tree_html(tree)}</li>" for tree in latest)
    note = f" (the latest {len(latest)})" if len(latest) < len(trees) else ""
    return (
        f"<details id='conversations' open><summary>{len(trees)} conversation(s){note}"
        f"</summary><ul>{items}</ul></details>"
    )


def _tree_html(tree: list[TreeRun]) -> str:
    """Nested lists from the runs depth first: a level deeper opens a list in the open item."""
    out: list[str] = []
    previous = -1
    for run in tree:
        if run.level > previous:
            out.append("<ul class='tree'>")
        else:
            out.append("</li>" + "</ul></li>" * (previous - run.level))
        out.append(f"<li {_tree_data(run)}>{_tree_item(run)}")
        previous = run.level
    out.append("</li>" + "</ul></li>" * previous + "</ul>")
    return "".join(out)


def _tree_data(run: TreeRun) -> str:
    return (
        f"data-run='{escape(run.run_id)}' data-agent='{escape(run.agent_id)}' "
        f"data-status='{escape(run.status)}' data-parent='{escape(run.parent_run_id or '')}'"
    )


def _tree_item(run: TreeRun) -> str:
    how = (
        f"<span class='muted'>{escape(run.relation.replace('_', ' '))}</span> "
        if run.relation
        else ""
    )
    tokens = "" if run.tokens is None else f" · {run.tokens} tokens"
    latency = "" if run.latency_ms is None else f" · {run.latency_ms} ms"
    return (
        f"{how}<b>{escape(run.kind or DEFAULT_KIND)}</b> "
        f"{_timeline_link(run.agent_id, run.run_id, run.agent_id)} "
        f"<span class='run-status'>{escape(run.status)}</span>{tokens}{latency} "
        f"<span class='muted'>{escape(_clip(run.result, 80))}</span>"
    )


def _run_data(run: RunRow) -> str:
    return (
        f"data-run='{escape(run.run_id)}' data-agent='{escape(run.agent_id)}' "
        f"data-tenant='{escape(run.tenant_id)}'"
    )


def timeline_body(entries: list[TimelineEntry]) -> str:
    if not entries:
        return "<p id='empty'>No events for this agent (yet).</p>"
    rows = []
    for e in entries:
        latency, tokens = _latency_and_tokens(e.payload)
        rows.append(
            f"<tr data-type='{escape(e.type)}'><td>{_time(e.occurred_at)}</td>"
            f"<td>{escape(e.type)}</td><td class='muted'>{escape(e.run_id or '')}</td>"
            f"<td class='muted'>{escape(e.call_id or '')}</td><td>{escape(e.source)}</td>"
            f"<td>{latency}</td><td>{tokens}</td>"
            f"<td><pre>{escape(_summary(e.type, e.payload))}</pre></td></tr>"
        )
    head = (
        "<tr><th>time</th><th>event</th><th>run</th><th>call</th><th>source</th>"
        "<th>latency ms</th><th>tokens</th><th>details</th></tr>"
    )
    return f"<table id='timeline'>{head}{''.join(rows)}</table>"


def _latency_and_tokens(payload: dict[str, Any]) -> tuple[str, str]:
    latency = payload.get("latency_ms")
    usage = payload.get("usage")
    tokens = ""
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        tokens = f"{prompt + completion} ({prompt}+{completion})"
    return ("" if latency is None else str(latency)), tokens


def _summary(type_name: str, payload: dict[str, Any]) -> str:
    """The fields that say what happened, not the envelope."""
    skip = {"envelope", "usage", "latency_ms", "messages_json", "tools_json", "system_prompt"}
    fields = {k: v for k, v in payload.items() if k not in skip and v not in (None, "", [], {})}
    return _clip(json.dumps(fields, ensure_ascii=False, default=str), 600)


def _timeline_link(agent_id: str, run_id: str | None, label: str) -> str:
    query = f"?run_id={quote(run_id)}" if run_id else ""
    return f"<a href='/agents/{quote(agent_id)}/timeline{query}'>{escape(label)}</a>"


def _pretty(value: object) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)
    return json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True, default=str)


def _clip(text: str | None, limit: int = 120) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _time(at: datetime | None) -> str:
    return "" if at is None else escape(at.strftime("%Y-%m-%d %H:%M:%S"))
