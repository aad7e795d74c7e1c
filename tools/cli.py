"""The ``agentstream`` command line."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from agentstream.schemas.errors import AgentStreamError
from agentstream.streams.logs import configure_logging
from agentstream.streams.settings import (
    DevStackRecord,
    Settings,
    clear_dev_stack,
    load_settings,
    write_dev_stack,
)
from agentstream.streams.topics import TopicStatus, describe_topics, ensure_topics
from agentstream.tools.loading import DEFAULT_SPEC, load_spec
from agentstream.tools.services import ServiceSupervisor, dev_services
from agentstream.tools.stack import EmbeddedStack

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
        typer.Option(help="Keep PostgreSQL data here across restarts (default: a temp dir)."),
    ] = None,
    spec: Annotated[
        str, typer.Option(help="The agent the services run, as package.module:attribute.")
    ] = DEFAULT_SPEC,
    services: Annotated[
        bool,
        typer.Option(help="Also run the agentstream services (processor, workers, projector)."),
    ] = True,
) -> None:
    """Start the embedded stack in the foreground until Ctrl-C; prints its settings when ready."""
    # Also SIGINT: a shell starts background jobs with it ignored, and Python keeps that.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    began = time.monotonic()
    stack = EmbeddedStack(data_dir=data_dir)
    supervisor: ServiceSupervisor | None = None
    try:
        endpoints = stack.start()
        if services:
            settings = Settings(**endpoints.__dict__)
            ensure_topics(settings)
            supervisor = ServiceSupervisor(
                dev_services(spec), stack.workdir, endpoints.environment()
            )
            supervisor.start()
        write_dev_stack(DevStackRecord(pid=os.getpid(), **endpoints.__dict__))
        exports = " ".join(f"{k}={v}" for k, v in endpoints.environment().items())
        # One unwrapped line, so scripts can grep it and users can copy it whole.
        ready_in = time.monotonic() - began
        print(f"agentstream dev stack ready in {ready_in:.1f}s: {exports}", flush=True)
        while True:
            stack.check_alive()
            if supervisor is not None:
                supervisor.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        err.print("stopping the dev stack")
    finally:
        clear_dev_stack(os.getpid())
        if supervisor is not None:
            supervisor.stop()
        stack.stop()


@app.command()
def demo() -> None:
    """Start the embedded stack, send a smoke event through it, print it, and stop."""
    from agentstream.tools.demo import smoke_round_trip

    with EmbeddedStack() as endpoints:
        out.print(f"embedded stack up: broker {endpoints.bootstrap_servers}")
        settings = Settings(
            bootstrap_servers=endpoints.bootstrap_servers, database_url=endpoints.database_url
        )
        result = smoke_round_trip(settings)
        out.print(
            f"smoke event consumed from {result.topic}[{result.partition}]@{result.offset}: "
            f"{result.value}"
        )
    out.print("embedded stack stopped")


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
) -> None:
    """Run one processor instance until SIGTERM or Ctrl-C; start several to share the load."""
    from agentstream.streams.engine import ProcessorEngine
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
    err.print(f"processor running agent {agent.name!r} in group {group!r}; Ctrl-C stops it")
    stats = engine.run()
    err.print(
        f"processor stopped: {stats.applied} applied, {stats.emitted} emitted, "
        f"{stats.duplicates} duplicates, {stats.dead_lettered} dead-lettered"
    )


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
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
