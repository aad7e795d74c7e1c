"""structlog, configured once per process: JSON when not on a terminal, readable when on one."""

from __future__ import annotations

import logging
import sys
from typing import Literal, cast

import structlog
from structlog._config import BoundLoggerLazyProxy

_configured = False


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "INFO"
) -> None:
    """Idempotent: the first call wins, so library code may call it defensively."""
    global _configured
    if _configured:
        return
    _configured = True
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str, **context: object) -> structlog.stdlib.BoundLogger:
    """A logger with ``context`` bound (agent_id, run_id, event_id, ...).

    Lazy: modules create their loggers at import time, often before the command configured
    logging, and a logger bound then would keep structlog's default (console) output."""
    # structlog.get_logger cannot take a ``logger`` initial value (the name of its own
    # parameter), so the lazy proxy it would return is built here directly.
    proxy = BoundLoggerLazyProxy(
        None, initial_values={"logger": name, **context}, logger_factory_args=(name,)
    )
    return cast("structlog.stdlib.BoundLogger", proxy)


bind_context = structlog.contextvars.bind_contextvars
clear_context = structlog.contextvars.clear_contextvars
