"""``agentstream replay``: rebuild projections, re-fold an agent in a sandbox, redrive dead
letters, copy topics. The logic lives in projections/replay_window.py and tools/replay_*.py."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agentstream.processors.loading import DEFAULT_SPEC, load_catalog
from agentstream.schemas.errors import ConfigurationError
from agentstream.streams.runtime.settings import Settings, load_settings
from agentstream.streams.topics import TOPICS
from agentstream.tools.replay.progress import parse_moment, parse_window, tracking

if TYPE_CHECKING:
    from agentstream.processors.replay.agent import AgentReplay, Change
    from agentstream.processors.replay.history import AgentHistory
    from agentstream.processors.replay.team import TeamReplay

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    help="Replay history: rebuild projections, re-fold an agent through the current code, "
    "redrive dead letters, copy topics elsewhere.",
    no_args_is_help=True,
)

_SinceOption = Annotated[
    str | None,
    typer.Option(help="Records at or after this time: ISO 8601 (UTC by default) or an age (15m)."),
]
_UntilOption = Annotated[
    str | None, typer.Option(help="Records at or before this time (same forms as --since).")
]
_FromOffsetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--from-offset",
        help="First offset: N for every partition, or TOPIC:PARTITION=N; repeatable.",
    ),
]
_ToOffsetOption = Annotated[
    int | None, typer.Option("--to-offset", min=0, help="Stop before this offset, per partition.")
]
_SchemaOption = Annotated[
    str,
    typer.Option(
        envvar="AGENTSTREAM_PROJECTION_SCHEMA", help="PostgreSQL schema of the live read models."
    ),
]


@app.command("projections")
def replay_projections(
    schema: _SchemaOption = "projections",
    into: Annotated[
        str | None,
        typer.Option(help="Schema a window is projected into (default: <schema>_window)."),
    ] = None,
    since: _SinceOption = None,
    until: _UntilOption = None,
    from_offset: _FromOffsetOption = None,
    to_offset: _ToOffsetOption = None,
    swap: Annotated[
        bool, typer.Option(help="Without a window: swap the rebuild in for the live tables.")
    ] = True,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 5000,
) -> None:
    """Rebuild the read models from the topics, whole or a window.

    Without a window: the whole history, checked against the live tables and swapped in.
    With --since/--until or offsets: only that window, into a schema of its own (--into),
    beside the live one."""
    from agentstream.projections.projector import tune_for_batches

    settings = load_settings()
    window = parse_window(
        settings, since=since, until=until, from_offsets=from_offset, to_offset=to_offset
    )
    tune_for_batches()
    if not window.bounded:
        rebuild_all(settings, schema, swap, batch_size)
        return
    from agentstream.projections.replay_window import project_window

    target = into or f"{schema}_window"
    if target == schema:
        raise ConfigurationError(
            f"a window is never projected into the live schema {schema}",
            hint="give another --into schema, or no window for a full rebuild",
        )
    with tracking(err) as tracker:
        report = project_window(
            settings, window, schema=target, batch_size=batch_size, tracker=tracker
        )
    table = Table(title=f"schema {target}: the window's read models")
    for column in ("table", "rows", "md5"):
        table.add_column(column)
    for name, checksum in report.tables.items():
        table.add_row(name, str(checksum.rows), checksum.md5[:12])
    out.print(table)
    out.print(
        f"projected {report.applied} events of {report.records} records in the window into "
        f"schema {target} in {report.seconds:.1f}s ({report.rate:,.0f} records/s); "
        f"{report.undecodable} undecodable, {report.unwritable} unwritable"
    )


def rebuild_all(settings: Settings, schema: str, swap: bool, batch_size: int) -> None:
    """The whole history into a shadow schema, compared with the live tables, swapped in (with
    ``swap``); exits 1 when the live tables differ."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from agentstream.projections.rebuild import rebuild

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        "{task.fields[rate]}",
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task("rebuilding", total=None, rate="")
        began = time.monotonic()

        def advance(done: int, total: int) -> None:
            rate = done / max(time.monotonic() - began, 1e-6)
            progress.update(task, completed=done, total=total, rate=f"{rate:,.0f} events/s")

        report = rebuild(
            settings, schema=schema, swap=swap, batch_size=batch_size, on_progress=advance
        )
    table = Table(title=f"schema {schema}: live vs rebuilt")
    for column in ("table", "rows (live)", "rows (rebuilt)", "md5 (live)", "md5 (rebuilt)", ""):
        table.add_column(column)
    for name, rebuilt in report.rebuilt.items():
        live = report.live.get(name) if report.live else None
        table.add_row(
            name,
            str(live.rows) if live else "-",
            str(rebuilt.rows),
            live.md5[:12] if live else "-",
            rebuilt.md5[:12],
            "" if live is None else ("equal" if live == rebuilt else "DIFFERENT"),
        )
    out.print(table)
    out.print(
        f"rebuilt {report.records} records in {report.seconds:.1f}s ({report.rate:,.0f} events/s)"
    )
    if report.live is None:
        out.print("no live projection to compare with")
    elif report.live_behind:
        out.print(
            f"not compared: the live projection is behind the topics on "
            f"{len(report.live_behind)} partition(s) (is its projector running?)"
        )
    elif report.equal:
        out.print("check passed: the live tables equal the rebuild")
    else:
        out.print(f"check FAILED: the live tables differ in {', '.join(report.differing())}")
    out.print(
        f"swapped: schema {schema} now holds the rebuild"
        if report.swapped
        else f"not swapped: the rebuild stays in schema {report.shadow}"
    )
    if report.equal is False:
        raise typer.Exit(1)


@app.command("agent")
def replay_agent_command(
    agent: Annotated[str, typer.Argument(help="The agent's id.")],
    spec: Annotated[
        list[str] | None,
        typer.Option(
            "--spec",
            help="The agents to replay with, as package.module:attribute: an AgentSpec, a list "
            "of specs, or a Catalog; repeatable, as given to `processor run`.",
        ),
    ] = None,
    children: Annotated[
        bool,
        typer.Option(
            "--children",
            help="Replay the agents it delegated to as well, under --spec, and use the answers "
            "they would send now instead of the recorded ones (a what-if of a changed kind).",
        ),
    ] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="List identical steps too, not just differences.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The result as one JSON object.")] = False,
) -> None:
    """Re-fold an agent's history through the current code and diff its outputs.

    The recorded inputs go through the current state machine and --spec in memory (nothing
    is sent or written); what that emits is compared with the recorded outputs, wherever they
    are keyed (the tasks it gave other agents too). The answers of the runs it delegated to
    are the recorded ones, unless --children. Exit code 0 when identical, 1 when different."""
    from agentstream.processors.replay.agent import replay_agent
    from agentstream.processors.replay.history import read_history
    from agentstream.processors.replay.team import TeamReplay, replay_team, team_json
    from agentstream.streams.serde import EventSerde, registry_client

    settings = load_settings()
    paths = spec or [DEFAULT_SPEC]
    catalog = load_catalog(paths)
    kinds = {t.target for s in catalog.specs for t in s.tools if t.target is not None}
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))

    def read(agent_id: str) -> AgentHistory:
        with tracking(err) as tracker:
            progress = tracker.start(f"reading {agent_id}'s history", None)
            return read_history(settings, serde, agent_id, kinds=kinds, on_progress=progress)

    history = read(agent)
    if not history:
        raise ConfigurationError(
            f"no events of agent {agent!r} on the topics (prefix {settings.topic_prefix!r})",
            hint="check the agent id and AGENTSTREAM_TOPIC_PREFIX",
        )
    if children:
        result = replay_team(history, catalog, read)
    else:
        result = TeamReplay(replay_agent(history, catalog))
    if as_json:
        print(json.dumps(team_json(result), ensure_ascii=False, default=str))
    else:
        _show_team(result, f"{agent} replayed with {', '.join(paths)}", show_all)
    if not result.identical:
        raise typer.Exit(1)


def _show_team(result: TeamReplay, title: str, show_all: bool, depth: int = 0) -> None:
    """The agent's diff, the answers of its children, then each child's, indented."""
    replay = result.replay
    indent = "  " * depth
    table = _diff_table(replay, title, show_all)
    if table.row_count:
        out.print(table)
    out.print(indent + ("identical: " if replay.identical else "DIFFERENT: ") + _summary(replay))
    _show_open_run(replay, indent)
    for answer in result.answers:
        if answer.verdict != "same" or show_all:
            changes = "; ".join(
                f"{c.path}: {_short(c.recorded)} → {_short(c.replayed)}" for c in answer.changes
            )
            out.print(
                escape(
                    f"{indent}answer of {answer.child_agent_id} to call {answer.call_id}: "
                    f"{_ANSWER_VERDICTS[answer.verdict]}" + (f" ({changes})" if changes else "")
                )
            )
    for child in result.children:
        _show_team(child, f"{child.replay.agent_id}, replayed for its parent", show_all, depth + 1)


_ANSWER_VERDICTS = {
    "same": "the same",
    "changed": "changed",
    "missing": "recorded, not sent now",
    "new": "sent now only",
}


def _diff_table(result: AgentReplay, title: str, show_all: bool) -> Table:
    from agentstream.tools.harness.demo import describe

    table = Table(title=escape(title))
    for column in ("step", "input", "output", "verdict", "difference"):
        table.add_column(column, overflow="fold")
    for step in result.steps if show_all else result.differing():
        # event texts are data, not rich markup
        cause = escape(describe(step.cause))
        if step.rejection:
            cause += escape(f" (rejected: {step.rejection})")
        if step.withheld:
            cause += " (not sent in this replay)"
        if not step.outputs:
            table.add_row(str(step.index), cause, "-", "same", "")
        for output in step.outputs:
            table.add_row(
                str(step.index),
                cause,
                output.type,
                _OUTPUT_VERDICTS.get(output.verdict, output.verdict),
                _changes(output.changes),
            )
            cause = ""
    return table


_OUTPUT_VERDICTS = {"missing": "recorded, not emitted now", "new": "emitted now only"}


def _changes(changes: tuple[Change, ...]) -> str:
    text = escape(
        "; ".join(f"{c.path}: {_short(c.recorded)} → {_short(c.replayed)}" for c in changes[:4])
    )
    if len(changes) > 4:
        text += f"; … {len(changes) - 4} more"
    return text


def _summary(result: AgentReplay) -> str:
    counts = ", ".join(
        f"{result.count(v)} {v}" for v in ("same", "changed", "missing", "new") if result.count(v)
    )
    summary = f"{len(result.steps)} inputs re-folded, outputs: {counts or 'none'}"
    if result.orphans:
        summary += f" ({result.orphans} recorded outputs whose input is gone)"
    return summary


def _show_open_run(result: AgentReplay, indent: str = "") -> None:
    """Identical outputs do not mean a healthy agent: say what an open run still waits for."""
    run = result.state.run if result.state is not None else None
    if run is not None:
        waits = escape(", ".join(result.waiting_for()) or "its next step")
        out.print(
            f"{indent}[yellow]run {run.run_id} is still open[/yellow] (started "
            f"{run.started_at.isoformat()}, deadline {run.deadline_at.isoformat()}), "
            f"waiting for: {waits}"
        )


def _short(value: Any, width: int = 48) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("dlq")
def replay_dlq(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be redriven; send nothing.")
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="Only letters with this error class or reason text.")
    ] = None,
    topic: Annotated[
        str | None, typer.Option(help="Only letters from this original topic, e.g. agent.inputs.")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="Only letters from this service (processor, projector…).")
    ] = None,
    agent: Annotated[str | None, typer.Option(help="Only letters of this agent.")] = None,
    since: Annotated[str | None, typer.Option(help="Only letters failed at or after.")] = None,
    until: Annotated[str | None, typer.Option(help="Only letters failed at or before.")] = None,
) -> None:
    """Redrive dead letters to the topic they came from, after a fix.

    Each letter goes back to its original topic and partition, at most once: its id travels
    in a header of the redriven record."""
    from agentstream.streams.serde import EventSerde, registry_client
    from agentstream.tools.replay.dlq import LetterFilter, plan_redrive, redrive

    settings = load_settings()
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    letters = LetterFilter(
        reason=reason,
        topic=topic,
        source=source,
        agent=agent,
        since=parse_moment(since, "--since"),
        until=parse_moment(until, "--until"),
    )
    with tracking(err) as tracker:
        plan = plan_redrive(settings, serde, letters, tracker)
        deliveries = [] if dry_run else redrive(settings, plan.todo, tracker)
    table = Table(title="dead letters to redrive" if dry_run else "redriven dead letters")
    for column in ("dead letter", "from", "agent", "error class", "reason", "failed at", "to"):
        table.add_column(column, overflow="fold")
    for index, found in enumerate(plan.todo):
        letter = found.letter
        where = "(dry run)"
        if deliveries:
            d = deliveries[index]
            where = f"{d.topic}[{d.partition}]@{d.offset}"
        table.add_row(
            letter.dead_letter_id[:8],
            f"{letter.original_topic}[{letter.original_partition}]@{letter.original_offset}",
            escape(letter.agent_id or "-"),
            escape(letter.error_class),
            escape(_short(letter.reason, 60)),
            letter.failed_at.isoformat(timespec="seconds"),
            where,
        )
    if plan.todo:
        out.print(table)
    verb = "would redrive" if dry_run else "redrove"
    line = f"{verb} {len(plan.todo)} dead letter(s); {len(plan.already)} redriven before"
    line += f", {plan.skipped} not matching the filters"
    if plan.undecodable:
        line += f", {plan.undecodable} undecodable"
    out.print(line)
    if plan.missing_topics:
        err.print(f"original topics gone, not redriven: {', '.join(sorted(plan.missing_topics))}")


@app.command("copy")
def replay_copy(
    to_prefix: Annotated[
        str | None, typer.Option(help="Topic prefix of the copy (default: the source's).")
    ] = None,
    to_bootstrap_servers: Annotated[
        str | None,
        typer.Option(help="Another cluster's bootstrap servers (default: the same cluster)."),
    ] = None,
    topic: Annotated[
        list[str] | None,
        typer.Option(help="A logical topic to copy, e.g. agent.inputs; repeatable (default: all)."),
    ] = None,
    since: _SinceOption = None,
    until: _UntilOption = None,
    from_offset: _FromOffsetOption = None,
    to_offset: _ToOffsetOption = None,
) -> None:
    """Copy a window of the agent topics to another prefix or cluster.

    Same partitions, keys, headers and timestamps. Values are copied byte for byte, so the
    copy needs the same schema registry."""
    from agentstream.tools.replay.copy import copy_topics, destination_settings

    settings = load_settings()
    by_name = {spec.name: spec for spec in TOPICS}
    unknown = [t for t in topic or [] if t not in by_name]
    if unknown:
        raise ConfigurationError(
            f"unknown topic(s) {unknown}", hint=f"choose from {sorted(by_name)}"
        )
    specs = [by_name[t] for t in topic] if topic else list(TOPICS)
    dest = destination_settings(
        settings, to_prefix=to_prefix, to_bootstrap_servers=to_bootstrap_servers
    )
    window = parse_window(
        settings, since=since, until=until, from_offsets=from_offset, to_offset=to_offset
    )
    with tracking(err) as tracker:
        report = copy_topics(settings, dest, specs, window, tracker)
    table = Table(title=f"copied to {report.destination}")
    table.add_column("topic")
    table.add_column("records", justify="right")
    for spec in specs:
        name = dest.topic(spec.name)
        table.add_row(name, str(report.per_topic.get(name, 0)))
    out.print(table)
    out.print(
        f"copied {report.records} records in {report.seconds:.1f}s ({report.rate:,.0f} records/s)"
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="replay")
