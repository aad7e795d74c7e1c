"""``agentstream inspect AGENT``: the agent's state, runs, the conversations its runs belong to
(trees of runs across agents) and timeline, from the PostgreSQL read models, or folded from the
topics by the processor's own state machine when there is no database (or with
``--from-topics``)."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentstream.processors.core.machine import run_id_of
from agentstream.processors.core.spec import Catalog
from agentstream.processors.core.state import AgentState
from agentstream.processors.loading import DEFAULT_SPEC, load_catalog
from agentstream.processors.replay.history import AgentHistory, read_history
from agentstream.projections.audit import event_from_payload
from agentstream.projections.erasure import erased_values, scrub_value
from agentstream.projections.inspect import (
    AgentView,
    RunView,
    TimelineItem,
    TreeRun,
    outcome_summary,
    topic_trees,
    view_from_database,
)
from agentstream.schemas.errors import ConfigurationError, ServiceUnavailableError
from agentstream.schemas.events import (
    AgentInput,
    DeadLetter,
    Event,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunHandedOff,
    RunOutcome,
)
from agentstream.streams.runtime.settings import Settings, load_settings
from agentstream.streams.topics import DLQ, INPUTS, OUTCOMES
from agentstream.tools.replay.progress import tracking

if TYPE_CHECKING:
    from agentstream.streams.serde import EventSerde

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


_OUTCOMES = (RunCompleted, RunFailed, RunCancelled, RunHandedOff)


def inspect(
    agent: Annotated[str, typer.Argument(help="The agent's id.")],
    run: Annotated[str | None, typer.Option(help="Only this run's events and row.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show the last N timeline events.")] = 30,
    from_topics: Annotated[
        bool, typer.Option("--from-topics", help="Fold the state from the topics, not PostgreSQL.")
    ] = False,
    schema: Annotated[
        str,
        typer.Option(envvar="AGENTSTREAM_PROJECTION_SCHEMA", help="Schema of the read models."),
    ] = "projections",
    spec: Annotated[
        list[str] | None,
        typer.Option(
            help="The agent kinds served, as the processor's --spec (repeatable), to fold the "
            "state from the topics."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The view as one JSON object.")] = False,
) -> None:
    """Show an agent's current state and timeline (PostgreSQL, else the topics)."""
    settings = load_settings()
    view = None
    if not from_topics:
        view = _from_database(settings, schema, agent, run, limit)
    if view is None:
        catalog = load_catalog(spec or [DEFAULT_SPEC])
        view = view_from_topics(settings, catalog, agent, run=run, limit=limit)
    if as_json:
        print(json.dumps(_json(view), ensure_ascii=False, default=str))
    else:
        _render(view)


def _from_database(
    settings: Settings, schema: str, agent: str, run: str | None, limit: int
) -> AgentView | None:
    """The view from the read models; None (with a note why) to fall back to the topics."""
    import psycopg

    from agentstream.projections.database import connect

    if settings.database_url is None:
        err.print("no database configured (AGENTSTREAM_DATABASE_URL): folding from the topics")
        return None
    try:
        with connect(settings.database_url, schema, connect_timeout=3) as conn:
            view = view_from_database(conn, schema, agent, run_id=run, limit=limit)
    except ServiceUnavailableError as exc:
        err.print(f"{exc}: folding from the topics")
        return None
    except psycopg.errors.UndefinedTable:
        err.print(
            f"schema {schema} has no read models (run `agentstream db migrate`): "
            "folding from the topics"
        )
        return None
    if view is None:
        err.print(
            f"{agent} is not in the read models of schema {schema} (is the projector "
            "running?): folding from the topics"
        )
    return view


def view_from_topics(
    settings: Settings, catalog: Catalog, agent: str, *, run: str | None, limit: int
) -> AgentView:
    from agentstream.streams.serde import EventSerde, registry_client

    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    with tracking(err) as tracker:
        history = read_history(
            settings,
            serde,
            agent,
            kinds=catalog.names,
            on_progress=tracker.start(f"reading {agent}'s history", None),
        )
    if not history:
        raise ConfigurationError(
            f"no events of agent {agent!r} on the topics (prefix {settings.topic_prefix!r})",
            hint="check the agent id and AGENTSTREAM_TOPIC_PREFIX",
        )
    state = history.state(catalog)
    assert state is not None  # the history has inputs or outputs, so its agent was seen
    # The topics keep erased facts until retention: the view shows what the state machine kept.
    secrets = erased_values(r.event for r in history.inputs)
    view = _view_of(history, state, secrets, settings, run, limit)
    trees = _trees_from_topics(settings, serde, catalog, history, state, run)
    view.conversations = [
        [replace(r, result=scrub_value(r.result, secrets)) for r in tree] for tree in trees
    ]
    return view


def _conversations_of(history: AgentHistory, state: AgentState, run: str | None) -> dict[str, str]:
    """The conversation (correlation id) of each of the agent's runs, or of ``run`` only."""
    found = {
        r.event.envelope.run_id: r.event.envelope.correlation_id
        for r in history.outputs
        if r.event.envelope.run_id is not None and r.event.envelope.agent_id == state.agent_id
    }
    if state.run is not None:
        found[state.run.run_id] = state.run.correlation_id
    for queued in state.queue:
        found[run_id_of(queued.event_id)] = queued.correlation_id or queued.event_id
    return {k: v for k, v in found.items() if run in (None, k)}


def _trees_from_topics(
    settings: Settings,
    serde: EventSerde,
    catalog: Catalog,
    history: AgentHistory,
    state: AgentState,
    run: str | None,
) -> list[list[TreeRun]]:
    """The conversations of the agent's runs from every partition of the inputs, outcomes and
    dead letter topics: the runs other agents' runs started are keyed to those agents."""
    from agentstream.streams.topic_scan import scan_topics

    conversations = set(_conversations_of(history, state, run).values())
    if not conversations:
        return []
    records = [s.record for s in scan_topics(settings, serde, [INPUTS, OUTCOMES, DLQ])]
    active = state.run
    return topic_trees(
        (r for r in records if isinstance(r, AgentInput)),
        (r for r in records if isinstance(r, _OUTCOMES)),
        conversations,
        refused={
            r.event_id
            for r in records
            if isinstance(r, DeadLetter) and r.source == "processor" and r.event_id
        },
        default_kind=catalog.default.newest.name,
        running_tokens={active.run_id: active.usage.total} if active else None,
    )


def _view_of(
    history: AgentHistory,
    state: AgentState,
    secrets: list[str],
    settings: Settings,
    run: str | None,
    limit: int,
) -> AgentView:
    items = [
        _scrubbed_item(r.event, secrets)
        for r in history.timeline()
        if run is None or run in (r.event.envelope.run_id, _started_run(r.event))
    ]
    runs = [
        _run_view(o, secrets)
        for o in {i.event.envelope.event_id: i.event for i in history.outputs}.values()
        if isinstance(o, _OUTCOMES)
    ]
    active = state.run
    if active is not None:
        runs.append(
            RunView(
                active.run_id,
                "running",
                active.steps,
                active.tool_calls,
                active.usage.total,
                active.started_at,
                None,
                None,
                active.spec_version,
            )
        )
    prefix = settings.topic_prefix
    return AgentView(
        source=f"the topics (prefix {prefix!r}, partition {history.partition}), folded by the "
        "state machine",
        agent_id=state.agent_id,
        tenant_id=state.tenant_id,
        status=state.status,
        active_run_id=active.run_id if active else None,
        runs_completed=state.runs_completed,
        runs_failed=state.runs_failed,
        prompt_tokens=state.usage.prompt_tokens,
        completion_tokens=state.usage.completion_tokens,
        updated_at=state.updated_at,
        pending=[
            f"{p.tool} ({p.call_id}): {p.status.replace('_', ' ')}" for p in active.pending_tools
        ]
        if active
        else [],
        queued_inputs=len(state.queue),
        runs=[r for r in runs if run is None or r.run_id == run],
        timeline=items[-limit:],
        events=len(items),
        runs_cancelled=state.runs_cancelled,
        facts=[f"{f.key} = {f.value}" for f in state.facts],
        kind=state.kind,
        runs_handed_off=state.runs_handed_off,
    )


def _started_run(event: Event) -> str | None:
    """The run an input of this agent starts (an input belongs to no run yet)."""
    return run_id_of(event.envelope.event_id) if isinstance(event, AgentInput) else None


def _scrubbed_item(event: Event, secrets: list[str]) -> TimelineItem:
    env = event.envelope
    payload = event.model_dump(mode="json")
    shown: Event | None = event
    if secrets:
        payload = {k: v if k == "envelope" else scrub_value(v, secrets) for k, v in payload.items()}
        try:
            shown = event_from_payload(type(event).__name__, payload)
        except ValueError:  # pydantic's ValidationError: a scrubbed field no longer validates
            shown = None
    return TimelineItem(
        env.occurred_at, type(event).__name__, env.run_id, env.event_id, shown, payload
    )


def _run_view(outcome: RunOutcome, secrets: list[str]) -> RunView:
    status, result = outcome_summary(outcome)
    return RunView(
        outcome.envelope.run_id or "",
        status,
        outcome.steps,
        outcome.tool_calls,
        outcome.usage.total,
        outcome.started_at,
        outcome.envelope.occurred_at,
        scrub_value(result, secrets),
        outcome.spec_version,
    )


def _json(view: AgentView) -> dict[str, Any]:
    data = asdict(view)
    data["timeline"] = [
        {k: v for k, v in asdict(item).items() if k != "event"} for item in view.timeline
    ]
    return data


def _render(view: AgentView) -> None:
    from agentstream.tools.harness.demo import describe

    out.print(
        f"[bold]{escape(view.agent_id)}[/bold] (tenant {escape(view.tenant_id)}) "
        f"from {escape(view.source)}"
    )
    state = Table(show_header=False, box=None)
    state.add_column(style="bold")
    state.add_column()
    state.add_row("status", view.status)
    state.add_row("kind", view.kind or "the default kind")
    state.add_row("active run", view.active_run_id or "-")
    if view.pending:
        state.add_row("waiting for", escape("; ".join(view.pending)))
    if view.queued_inputs:
        state.add_row("queued inputs", str(view.queued_inputs))
    state.add_row(
        "runs",
        f"{view.runs_completed} completed, {view.runs_failed} failed, "
        f"{view.runs_cancelled} cancelled, {view.runs_handed_off} handed off",
    )
    state.add_row(
        "tokens",
        f"{view.prompt_tokens + view.completion_tokens} "
        f"({view.prompt_tokens} prompt, {view.completion_tokens} completion)",
    )
    state.add_row("updated", view.updated_at.isoformat() if view.updated_at else "-")
    out.print(state)
    if view.facts:
        facts = Table(title="facts it keeps", show_header=False)
        facts.add_column(overflow="fold")
        for fact in view.facts:
            facts.add_row(escape(fact))
        out.print(facts)
    if view.runs:
        runs = Table(title="runs")
        for column in ("run", "status", "spec", "steps", "tools", "tokens", "started", "result"):
            runs.add_column(column, overflow="fold")
        for r in view.runs:
            runs.add_row(
                r.run_id[:8],
                r.status,
                f"v{r.spec_version}" if r.spec_version is not None else "-",
                str(r.steps),
                str(r.tool_calls),
                str(r.tokens),
                f"{r.started_at:%Y-%m-%d %H:%M:%S}" if r.started_at else "-",
                escape(r.result or ""),
            )
        out.print(runs)
    if view.conversations:
        out.print(_conversations_table(view))
    shown = len(view.timeline)
    title = (
        f"timeline (last {shown} of {view.events} events)"
        if shown < view.events
        else (f"timeline ({shown} events)")
    )
    timeline = Table(title=title)
    for column in ("time", "run", "event"):
        timeline.add_column(column, overflow="fold")
    for item in view.timeline:
        timeline.add_row(
            f"{item.occurred_at:%H:%M:%S.%f}"[:-3],
            (item.run_id or "-")[:8],
            escape(describe(item.event) if item.event is not None else item.type),
        )
    out.print(timeline)


def _conversations_table(view: AgentView) -> Table:
    """Every conversation as a tree: a run indented under the run that started it."""
    table = Table(title="conversations (runs across agents)")
    for column in ("run", "agent", "kind", "status", "tokens", "ms", "result"):
        table.add_column(column, overflow="fold")
    for tree in view.conversations:
        table.add_section()
        for r in tree:
            how = f"{r.relation.replace('_', ' ')} " if r.relation else ""
            mark = "*" if r.agent_id == view.agent_id else " "
            table.add_row(
                f"{'  ' * r.level}{mark}{how}{r.run_id[:8]}",
                escape(r.agent_id),
                escape(r.kind or "default"),
                r.status,
                "-" if r.tokens is None else str(r.tokens),
                "-" if r.latency_ms is None else str(r.latency_ms),
                escape(r.result or ""),
            )
    return table


def register(root: typer.Typer) -> None:
    root.command("inspect")(inspect)
