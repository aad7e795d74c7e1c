"""``agentstream dev``: the development stack."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer

from agentstream.processors.loading import DEFAULT_SPEC
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
