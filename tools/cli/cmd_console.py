"""``agentstream console``: the operator console and HTTP ingress (see console_app.py)."""

from __future__ import annotations

from typing import Annotated

import typer


def console(
    host: Annotated[
        str, typer.Option(help="Address to serve (non-loopback needs a credential).")
    ] = ("127.0.0.1"),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to serve.")] = 8088,
    schema: Annotated[str, typer.Option(help="PostgreSQL schema of the read models.")] = (
        "projections"
    ),
) -> None:
    """Serve the operator console (approvals, runs, timelines) and the HTTP ingress."""
    import uvicorn

    from agentstream.streams.runtime.logs import get_logger
    from agentstream.streams.runtime.settings import load_settings
    from agentstream.tools.console.app import Console, check_exposure, create_console_app

    settings = load_settings()
    check_exposure(host, settings)
    settings.require_database_url()
    app = create_console_app(Console(settings, schema=schema))
    get_logger("agentstream.console").info("console_listening", url=f"http://{host}:{port}")
    typer.echo(f"console on http://{host}:{port}; Ctrl-C stops it", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


def register(root: typer.Typer) -> None:
    root.command("console")(console)
