"""The ``agentstream`` command line: each command group lives in a module of its own
(``cmd_*.py``) that registers itself here, one way."""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from agentstream.schemas.errors import AgentStreamError
from agentstream.streams.runtime.logs import configure_logging
from agentstream.streams.runtime.settings import load_settings
from agentstream.tools.cli import (
    cmd_agents,
    cmd_approvals,
    cmd_bench,
    cmd_callbacks,
    cmd_chaos,
    cmd_console,
    cmd_demo,
    cmd_dev,
    cmd_events,
    cmd_inspect,
    cmd_memory,
    cmd_processor,
    cmd_projections,
    cmd_replay,
    cmd_runs,
    cmd_soak,
    cmd_topics,
    cmd_workers,
)
from agentstream.tools.cli.options import err

app = typer.Typer(
    name="agentstream",
    help=(
        "Run persistent AI agents on Kafka: dev stack, demo, steering, inspection, replay, "
        "benchmarks."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"verbose": False}

#: every command group and command, in the order ``--help`` lists them
COMMANDS = (
    cmd_dev,
    cmd_demo,
    cmd_topics,
    cmd_processor,
    cmd_workers,
    cmd_approvals,
    cmd_runs,
    cmd_agents,
    cmd_memory,
    cmd_callbacks,
    cmd_projections,
    cmd_events,
    cmd_inspect,
    cmd_replay,
    cmd_chaos,
    cmd_soak,
    cmd_console,
    cmd_bench,
)
for command in COMMANDS:
    command.register(app)


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug logs.")
    ] = False,
) -> None:
    _state["verbose"] = verbose
    settings = load_settings(use_dev_stack=False)
    configure_logging(settings.log_format, "DEBUG" if verbose else settings.log_level)


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
