"""The ``agentstream`` command line."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from agentstream.processors.loading import DEFAULT_SPEC, load_spec
from agentstream.schemas.errors import AgentStreamError, ConfigurationError
from agentstream.streams.runtime.gc_tuning import collect_rarely
from agentstream.streams.runtime.health import observability
from agentstream.streams.runtime.logs import configure_logging
from agentstream.streams.runtime.settings import (
    DevStackRecord,
    clear_dev_stack,
    load_settings,
    write_dev_stack,
)
from agentstream.streams.topics import TopicStatus, describe_topics, ensure_topics
from agentstream.tools.cli import (
    cmd_bench,
    cmd_chaos,
    cmd_console,
    cmd_events,
    cmd_inspect,
    cmd_replay,
    cmd_soak,
)
from agentstream.tools.cli.options import BrokerOption, logs_off_screen
from agentstream.tools.devstack.full_stack import full_stack
from agentstream.tools.devstack.stack import BrokerKind

if TYPE_CHECKING:
    from agentstream.processors.workers.breaker import BreakerPolicy

app = typer.Typer(
    name="agentstream",
    help="Run persistent AI agents on Kafka: dev stack, demo, inspection, replay, benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dev_app = typer.Typer(help="The embedded development stack (broker + PostgreSQL on loopback).")
app.add_typer(dev_app, name="dev")
topics_app = typer.Typer(help="Create and inspect agentstream's topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
processor_app = typer.Typer(
    help="The processor: advances agents' state machines.", no_args_is_help=True
)
app.add_typer(processor_app, name="processor")
worker_app = typer.Typer(
    help="Workers that run side effects: tools, models, approval expiry.", no_args_is_help=True
)
app.add_typer(worker_app, name="worker")
worker_tools_app = typer.Typer(help="The tool worker.", no_args_is_help=True)
worker_app.add_typer(worker_tools_app, name="tools")
worker_models_app = typer.Typer(help="The model worker.", no_args_is_help=True)
worker_app.add_typer(worker_models_app, name="models")
worker_timers_app = typer.Typer(help="The approval expiry timer.", no_args_is_help=True)
worker_app.add_typer(worker_timers_app, name="timers")
approvals_app = typer.Typer(help="Human approvals of gated tool calls.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")
db_app = typer.Typer(help="The projection database: schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
projections_app = typer.Typer(
    help="The projector and its PostgreSQL read models (audit log, agents, runs, ...).",
    no_args_is_help=True,
)
app.add_typer(projections_app, name="projections")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
_state = {"verbose": False}


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug logs.")
    ] = False,
) -> None:
    _state["verbose"] = verbose
    settings = load_settings(use_dev_stack=False)
    configure_logging(settings.log_format, "DEBUG" if verbose else settings.log_level)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


@dev_app.command("up")
def dev_up(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Keep PostgreSQL data here across restarts (default: a temp dir); with "
                "--broker kafka, Kafka's log too, in PATH-kafka."
            )
        ),
    ] = None,
    spec: Annotated[
        str, typer.Option(help="The agent the services run, as package.module:attribute.")
    ] = DEFAULT_SPEC,
    services: Annotated[
        bool,
        typer.Option(help="Also run the agentstream services (processor, workers, projector)."),
    ] = True,
    broker: BrokerOption = BrokerKind.EMBEDDED,
) -> None:
    """Start the development stack in the foreground until Ctrl-C; prints its settings when
    ready."""
    # Also SIGINT: a shell starts background jobs with it ignored, and Python keeps that.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        with full_stack(spec, data_dir=data_dir, services=services, broker=broker) as running:
            endpoints = running.endpoints
            write_dev_stack(DevStackRecord(pid=os.getpid(), **endpoints.__dict__))
            try:
                exports = " ".join(f"{k}={v}" for k, v in endpoints.environment().items())
                # One unwrapped line, so scripts can grep it and users can copy it whole.
                print(
                    f"agentstream dev stack ready in {running.ready_seconds:.1f}s: {exports}",
                    flush=True,
                )
                while True:
                    running.check()
                    time.sleep(0.5)
            finally:
                clear_dev_stack(os.getpid())
    except KeyboardInterrupt:
        err.print("stopped the dev stack")


@app.command()
def demo(
    interactive: Annotated[
        bool, typer.Option(help="Ask before granting each approval instead of auto-approving.")
    ] = False,
    broker: BrokerOption = BrokerKind.EMBEDDED,
) -> None:
    """Run the sample support agent end to end on a stack of its own, then stop everything."""
    from rich.prompt import Confirm

    from agentstream.schemas.events import ApprovalRequested
    from agentstream.streams.serde import EventSerde, registry_client
    from agentstream.tools.harness.demo import outcome_table, run_demo, timeline_table

    def decide(request: ApprovalRequested) -> str | None:
        if not interactive:
            return "demo-operator"
        question = f"approve {request.tool}({request.arguments_json}) for {request.agent_id}?"
        return "you" if Confirm.ask(question, console=err) else None

    logs_off_screen("demo", err)
    out.print(f"starting the {broker} stack and the agentstream services…")
    with full_stack(DEFAULT_SPEC, broker=broker) as running:
        out.print(
            f"ready in {running.ready_seconds:.1f}s; sending three questions to the "
            "support agent (scripted model, refunds need approval)\n"
        )
        serde = EventSerde(registry_client(running.settings.require_schema_registry_url()))
        result = run_demo(running.settings, serde, out, decide=decide)
        out.print()
        out.print(outcome_table(result))
        out.print(timeline_table("customer-ben", result.timeline["customer-ben"]))
    out.print("everything stopped; nothing is left running")


def _topics_table(title: str, statuses: list[TopicStatus]) -> Table:
    table = Table(title=title)
    for column in ("topic", "partitions", "cleanup", "carries", "status"):
        table.add_column(column)
    for status in statuses:
        table.add_row(
            status.physical_name,
            str(status.partitions) if status.partitions is not None else "-",
            status.spec.cleanup_policy,
            ", ".join(t.__name__ for t in status.spec.value_types),
            status.action,
        )
    return table


app.command("send")(cmd_events.send)
app.command("tail")(cmd_events.tail)
app.command("inspect")(cmd_inspect.inspect)
app.add_typer(cmd_replay.app, name="replay")
app.command("chaos")(cmd_chaos.chaos)
app.command("soak")(cmd_soak.soak)
app.command("console")(cmd_console.console)
app.command("bench")(cmd_bench.bench)

#: ``--metrics-port`` of every long-running service.
_MetricsPort = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=65535,
        help="Serve /metrics, /healthz and /readyz on this port (0: a free one, logged); "
        "default AGENTSTREAM_METRICS_PORT, else off.",
    ),
]


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create missing topics and check that agent topics are co-partitioned."""
    settings = load_settings()
    statuses = ensure_topics(settings)
    out.print(_topics_table(f"topics on {settings.bootstrap_servers}", statuses))


@topics_app.command("describe")
def topics_describe() -> None:
    """Show every declared topic and whether it exists on the cluster."""
    settings = load_settings()
    statuses = describe_topics(settings)
    out.print(_topics_table(f"topics on {settings.bootstrap_servers}", statuses))
    if any(s.action == "missing" for s in statuses):
        err.print("some topics are missing: run `agentstream topics ensure`")
        raise typer.Exit(1)


@processor_app.command("run")
def processor_run(
    spec: Annotated[
        str, typer.Option(help="The agent, as package.module:attribute (an AgentSpec).")
    ] = DEFAULT_SPEC,
    group: Annotated[str, typer.Option(help="Consumer group shared by all instances.")] = (
        "agentstream-processor"
    ),
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
    instance_id: Annotated[
        str | None,
        typer.Option(help="Static group membership id: a restart resumes without a rebalance."),
    ] = None,
    metrics_port: _MetricsPort = None,
) -> None:
    """Run one processor instance until SIGTERM or Ctrl-C; start several to share the load."""
    from agentstream.processors.engine.loop import ProcessorEngine
    from agentstream.streams.serde import EventSerde, registry_client

    settings = load_settings()
    agent = load_spec(spec)
    ensure_topics(settings)
    serde = EventSerde(registry_client(settings.require_schema_registry_url()))
    engine = ProcessorEngine(
        settings,
        agent,
        serde=serde,
        group_id=group,
        batch_size=batch_size,
        instance_id=instance_id,
        transactional=settings.processor_transactions,
    )
    engine.install_signal_handlers()
    collect_rarely()
    err.print(f"processor running agent {agent.name!r} in group {group!r}; Ctrl-C stops it")
    with observability("processor", engine.readiness, settings, metrics_port):
        stats = engine.run()
    err.print(
        f"processor stopped: {stats.applied} applied, {stats.emitted} emitted, "
        f"{stats.duplicates} duplicates, {stats.dead_lettered} dead-lettered"
    )


_SpecsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--spec", help="An agent, as package.module:attribute (an AgentSpec); repeatable."
    ),
]
_ConcurrencyOption = Annotated[
    int, typer.Option(min=1, max=1000, help="Calls run at once by this worker.")
]
_InstanceOption = Annotated[
    str | None,
    typer.Option(help="Static group membership id: a restart resumes without a rebalance."),
]
_ThresholdOption = Annotated[
    int, typer.Option(min=1, help="Consecutive failures that open a circuit breaker.")
]
_CooldownOption = Annotated[
    float, typer.Option(min=0.0, help="Seconds an open breaker waits before a probe call.")
]


def _breaker_policy(threshold: int, cooldown: float) -> BreakerPolicy:
    # Imported here like every service module: importing one binds its module logger, which
    # must happen after the root callback configured logging.
    from agentstream.processors.workers.breaker import BreakerPolicy

    return BreakerPolicy(failure_threshold=threshold, cooldown_s=cooldown)


@worker_tools_app.command("run")
def worker_tools_run(
    *,
    spec: _SpecsOption = None,
    concurrency: _ConcurrencyOption = 8,
    group: Annotated[str, typer.Option(help="Consumer group shared by all instances.")] = (
        "agentstream-tool-worker"
    ),
    instance_id: _InstanceOption = None,
    breaker_threshold: _ThresholdOption = 5,
    breaker_cooldown: _CooldownOption = 30.0,
    metrics_port: _MetricsPort = None,
) -> None:
    """Run the agents' tools for every tool call request until SIGTERM or Ctrl-C."""
    from agentstream.processors.workers.tool_worker import ToolWorker

    settings = load_settings()
    agents = [load_spec(path) for path in spec or [DEFAULT_SPEC]]
    ensure_topics(settings)
    worker = ToolWorker(
        settings,
        agents,
        concurrency=concurrency,
        group_id=group,
        breaker=_breaker_policy(breaker_threshold, breaker_cooldown),
        instance_id=instance_id,
    )
    worker.install_signal_handlers()
    tools = ", ".join(sorted(worker.executor.tools))
    err.print(f"tool worker running {tools} in group {group!r}; Ctrl-C stops it")
    with observability("tool-worker", worker.runtime.readiness, settings, metrics_port):
        stats = worker.run()
    err.print(f"tool worker stopped: {stats.results} results, {stats.dead_lettered} dead-lettered")
    if stats.failed:
        raise typer.Exit(1)


@worker_models_app.command("run")
def worker_models_run(
    *,
    provider: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=BASE_URL of an OpenAI-compatible server (key from "
            "AGENTSTREAM_<NAME>_API_KEY), or NAME=scripted; repeatable. "
            "'scripted' is always there."
        ),
    ] = None,
    spec: _SpecsOption = None,
    concurrency: _ConcurrencyOption = 8,
    group: Annotated[str, typer.Option(help="Consumer group shared by all instances.")] = (
        "agentstream-model-worker"
    ),
    instance_id: _InstanceOption = None,
    rate_limit: Annotated[
        float | None, typer.Option(min=0.001, help="Calls per second to each HTTP provider.")
    ] = None,
    max_attempts: Annotated[int, typer.Option(min=1, max=20)] = 3,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per attempt.")] = 120.0,
    breaker_threshold: _ThresholdOption = 5,
    breaker_cooldown: _CooldownOption = 30.0,
    metrics_port: _MetricsPort = None,
) -> None:
    """Answer every model call request with the configured providers until SIGTERM or Ctrl-C.

    With --spec, refuses to start when an agent's model or fallback provider is not configured.
    """
    from agentstream.processors.core.spec import RetryPolicy
    from agentstream.processors.workers.model_worker import ModelWorker, ProviderConfig

    settings = load_settings()
    providers = [ProviderConfig.parse(p, rate_limit) for p in provider or []]
    known = {p.name for p in providers} | {"scripted"}
    for path in spec or []:
        model = load_spec(path).model
        for name in filter(None, (model.provider, model.fallback_provider)):
            if name not in known:
                raise ConfigurationError(
                    f"{path} uses provider {name!r}, which is not configured",
                    hint=f"add --provider {name}=BASE_URL",
                )
    ensure_topics(settings)
    worker = ModelWorker(
        settings,
        providers,
        concurrency=concurrency,
        group_id=group,
        breaker=_breaker_policy(breaker_threshold, breaker_cooldown),
        retry=RetryPolicy(max_attempts=max_attempts),
        timeout_s=timeout,
        instance_id=instance_id,
    )
    worker.install_signal_handlers()
    names = ", ".join(worker.providers)
    err.print(f"model worker running providers {names} in group {group!r}; Ctrl-C stops it")
    with observability("model-worker", worker.runtime.readiness, settings, metrics_port):
        stats = worker.run()
    err.print(f"model worker stopped: {stats.results} results, {stats.dead_lettered} dead-lettered")
    if stats.failed:
        raise typer.Exit(1)


@worker_timers_app.command("run")
def worker_timers_run(
    group: Annotated[str, typer.Option(help="Consumer group shared by all instances.")] = (
        "agentstream-approval-timer"
    ),
    metrics_port: _MetricsPort = None,
) -> None:
    """Expire approval requests that have no decision by their deadline."""
    from agentstream.processors.workers.expiry import ApprovalTimer

    settings = load_settings()
    ensure_topics(settings)
    timer = ApprovalTimer(settings, group_id=group)
    timer.install_signal_handlers()
    err.print(f"approval timer running in group {group!r}; Ctrl-C stops it")
    with observability("approval-timer", timer.readiness, settings, metrics_port):
        stats = timer.run()
    err.print(f"approval timer stopped: {stats.expired} approvals expired")


@approvals_app.command("list")
def approvals_list(
    show_all: Annotated[
        bool, typer.Option("--all", help="Also decided, expired and overdue ones.")
    ] = False,
) -> None:
    """Show the approval requests waiting for a decision."""
    from agentstream.processors.control.approvals import ApprovalsClient

    client = ApprovalsClient(load_settings())
    statuses = client.statuses() if show_all else client.pending()
    table = Table(title="approvals" if show_all else "pending approvals")
    for column in ("call id", "agent", "tool", "arguments", "arguments hash", "expires", "state"):
        table.add_column(column, overflow="fold")
    for status in statuses:
        request = status.request
        table.add_row(
            request.call_id,
            request.envelope.agent_id,
            request.tool,
            request.arguments_json,
            request.arguments_hash[:16],
            request.expires_at.isoformat(timespec="seconds"),
            status.state(),
        )
    out.print(table)


def _decide(
    call_id: str, approve: bool, approver: str, arguments_hash: str, comment: str | None
) -> None:
    from agentstream.processors.control.approvals import ApprovalsClient

    event = ApprovalsClient(load_settings()).decide(
        call_id, approve=approve, approver=approver, arguments_hash=arguments_hash, comment=comment
    )
    verb = "approved" if approve else "denied"
    out.print(f"{verb} call {call_id} as {approver} (event {event.envelope.event_id})")


_CallIdArgument = Annotated[str, typer.Argument(help="The call id, from `approvals list`.")]
_ApproverOption = Annotated[str, typer.Option(help="Who decides (recorded in the event).")]
_HashOption = Annotated[
    str,
    typer.Option(
        "--arguments-hash",
        help="The arguments hash you checked (from `approvals list`; a prefix of 8+ characters).",
    ),
]
_CommentOption = Annotated[str | None, typer.Option(help="Why, for the audit trail.")]


@approvals_app.command("approve")
def approvals_approve(
    call_id: _CallIdArgument,
    approver: _ApproverOption,
    arguments_hash: _HashOption,
    comment: _CommentOption = None,
) -> None:
    """Grant a pending approval: the gated tool call runs."""
    _decide(call_id, True, approver, arguments_hash, comment)


@approvals_app.command("deny")
def approvals_deny(
    call_id: _CallIdArgument,
    approver: _ApproverOption,
    arguments_hash: _HashOption,
    comment: _CommentOption = None,
) -> None:
    """Deny a pending approval: the model is told the call was denied."""
    _decide(call_id, False, approver, arguments_hash, comment)


_SchemaOption = Annotated[
    str,
    typer.Option(
        envvar="AGENTSTREAM_PROJECTION_SCHEMA",
        help="PostgreSQL schema of the read models (a dedicated one: rebuild swaps it).",
    ),
]


@db_app.command("migrate")
def db_migrate(schema: _SchemaOption = "projections") -> None:
    """Apply pending migrations to the projection schema (creating it if needed)."""
    from agentstream.projections.migrate import migrate

    settings = load_settings()
    applied = migrate(settings.require_database_url(), schema)
    if applied:
        out.print(f"schema {schema}: applied {', '.join(applied)}")
    else:
        out.print(f"schema {schema}: up to date")


@projections_app.command("run")
def projections_run(
    schema: _SchemaOption = "projections",
    group: Annotated[str, typer.Option(help="Consumer group shared by all instances.")] = (
        "agentstream-projector"
    ),
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 5000,
    instance_id: Annotated[
        str | None,
        typer.Option(help="Static group membership id: a restart resumes without a rebalance."),
    ] = None,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before starting.")] = True,
    max_backoff: Annotated[
        float, typer.Option(min=0.1, help="Longest pause (s) between retries while down.")
    ] = 10.0,
    metrics_port: _MetricsPort = None,
) -> None:
    """Run one projector until SIGTERM or Ctrl-C: every agent topic into PostgreSQL."""
    from agentstream.projections.migrate import migrate as apply_migrations
    from agentstream.projections.projector import Backoff, Projector, tune_for_batches

    settings = load_settings()
    ensure_topics(settings)
    if migrate:
        apply_migrations(settings.require_database_url(), schema)
    projector = Projector(
        settings,
        schema=schema,
        group_id=group,
        batch_size=batch_size,
        instance_id=instance_id,
        backoff=Backoff(maximum=max_backoff),
    )
    projector.install_signal_handlers()
    tune_for_batches()
    err.print(f"projector writing schema {schema!r} in group {group!r}; Ctrl-C stops it")
    with observability("projector", projector.readiness, settings, metrics_port):
        stats = projector.run()
    err.print(
        f"projector stopped: {stats.applied} events applied, {stats.duplicates} duplicates, "
        f"{stats.dead_lettered} dead-lettered"
    )


@projections_app.command("rebuild")
def projections_rebuild(
    schema: _SchemaOption = "projections",
    swap: Annotated[
        bool,
        typer.Option(help="Replace the live tables with the rebuilt ones (else keep both)."),
    ] = True,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 5000,
) -> None:
    """Rebuild the read models from the topics, check them against the live ones, swap."""
    from agentstream.projections.projector import tune_for_batches

    settings = load_settings()
    tune_for_batches()
    cmd_replay.rebuild_all(settings, schema, swap, batch_size)


def main() -> None:
    """Entry point: one actionable line per error, the traceback only with --verbose."""
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:  # typer.Exit(n) comes back as a return value
            sys.exit(code)
    except AgentStreamError as exc:
        if _state["verbose"]:
            traceback.print_exc()
        err.print(f"[red]error:[/red] {exc}")
        if exc.hint:
            err.print(f"hint: {exc.hint}")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # usage errors arrive here in non-standalone mode
        import click

        # typer >= 0.24 raises the click it vendors, whose errors derive from TyperException,
        # not from the click package's ClickException.
        if isinstance(exc, click.ClickException | typer.TyperException) and hasattr(exc, "show"):
            exc.show()
            sys.exit(getattr(exc, "exit_code", 2))
        raise


if __name__ == "__main__":
    main()
