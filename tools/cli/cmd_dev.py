"""``agentstream dev``: the development stack."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer

from agentstream.processors.loading import DEFAULT_SPEC, load_catalog
from agentstream.streams.runtime.settings import (
    DevStackRecord,
    clear_dev_stack,
    write_dev_stack,
)
from agentstream.tools.cli.options import BrokerOption, err
from agentstream.tools.devstack.full_stack import full_stack
from agentstream.tools.devstack.stack import BrokerKind

app = typer.Typer(help="The embedded development stack (broker + PostgreSQL on loopback).")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="dev")


def _raise_interrupt(signum: int, _frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


@app.command("up")
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
        list[str] | None,
        typer.Option(
            "--spec",
            help="The agents the services run, as package.module:attribute: an AgentSpec, a "
            "list of specs or a Catalog; repeatable, one kind (or its versions) each. The first "
            f"kind is the default for inputs that name none. Default: {DEFAULT_SPEC}.",
        ),
    ] = None,
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
    specs = spec or [DEFAULT_SPEC]
    # before anything starts: a spec that does not load is one line, not five crashing services
    kinds = load_catalog(specs).names if services else ()
    try:
        with full_stack(specs, data_dir=data_dir, services=services, broker=broker) as running:
            endpoints = running.endpoints
            write_dev_stack(DevStackRecord(pid=os.getpid(), **endpoints.__dict__))
            try:
                exports = " ".join(f"{k}={v}" for k, v in endpoints.environment().items())
                served = f" (agent kinds: {', '.join(kinds)})" if kinds else ""
                # One unwrapped line, so scripts can grep it and users can copy the settings
                # after the colon whole.
                print(
                    f"agentstream dev stack{served} ready in {running.ready_seconds:.1f}s: "
                    f"{exports}",
                    flush=True,
                )
                while True:
                    for service in running.check():
                        err.print(
                            f"[red]the {service.name} keeps crashing[/red] "
                            f"({service.restarts} restarts): left stopped, the rest of the stack "
                            f"stays up with its data. Its log: {service.log_path}\n"
                            f"{service.log_tail(8)}"
                        )
                    time.sleep(0.5)
            finally:
                clear_dev_stack(os.getpid())
    except KeyboardInterrupt:
        err.print("stopped the dev stack")
