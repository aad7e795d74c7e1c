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

from agentstream.schemas.errors import AgentStreamError
from agentstream.streams.logs import configure_logging
from agentstream.streams.settings import (
    DevStackRecord,
    Settings,
    clear_dev_stack,
    load_settings,
    write_dev_stack,
)
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

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
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
) -> None:
    """Start the embedded stack in the foreground until Ctrl-C; prints its settings when ready."""
    # Also SIGINT: a shell starts background jobs with it ignored, and Python keeps that.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    stack = EmbeddedStack(data_dir=data_dir)
    try:
        endpoints = stack.start()
        write_dev_stack(DevStackRecord(pid=os.getpid(), **endpoints.__dict__))
        exports = " ".join(f"{k}={v}" for k, v in endpoints.environment().items())
        # One unwrapped line, so scripts can grep it and users can copy it whole.
        print(f"agentstream dev stack ready in {stack.startup_seconds:.1f}s: {exports}", flush=True)
        while True:
            stack.check_alive()
            time.sleep(0.5)
    except KeyboardInterrupt:
        err.print("stopping the dev stack")
    finally:
        clear_dev_stack(os.getpid())
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


def main() -> None:
    """Entry point: one actionable line per error, the traceback only with --verbose."""
    try:
        app(standalone_mode=False)
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
