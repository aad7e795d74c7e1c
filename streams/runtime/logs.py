"""structlog, configured once per process: JSON when not on a terminal, readable when on one;
librdkafka's own log lines routed into it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Literal, TextIO, cast

import structlog

__all__ = [
    "KAFKA_LOGGER",
    "bind_context",
    "clear_context",
    "configure_logging",
    "get_logger",
    "log_to_file",
]

_configured = False


class _Output:
    """Where log lines go and how they look, switchable after loggers were cached (they keep the
    processors and the file they were first built with)."""

    def __init__(self) -> None:
        self.file: TextIO | None = None  # stderr as it is when written to (tests swap it)
        self.renderer: structlog.typing.Processor = structlog.processors.JSONRenderer()
        self.level = logging.INFO

    def render(self, logger: object, name: str, event: structlog.typing.EventDict) -> str:
        return cast("str", self.renderer(logger, name, event))

    def write(self, line: str) -> int:
        return (self.file or sys.stderr).write(line)

    def flush(self) -> None:
        (self.file or sys.stderr).flush()


_output = _Output()


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "INFO"
) -> None:
    """Idempotent: the first call wins, so library code may call it defensively."""
    global _configured
    if _configured:
        return
    _configured = True
    if fmt == "console" or (fmt == "auto" and sys.stderr.isatty()):
        _output.renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    _output.level = logging.getLevelName(level)
    structlog.configure(
        processors=[
            _name_logger,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            _output.render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_output.level),
        logger_factory=structlog.PrintLoggerFactory(file=cast("TextIO", _output)),
        cache_logger_on_first_use=True,
    )


def log_to_file(path: Path) -> Path | None:
    """Send this process's logs to ``path`` as JSON lines, for commands that draw tables and
    progress on a terminal (where log lines would land in the middle of them). Not when debug
    logs were asked for (``--verbose``): those stay on screen. Returns the file, if used."""
    if _output.level <= logging.DEBUG:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    _output.file = path.open("w", encoding="utf-8", buffering=1)
    _output.renderer = structlog.processors.JSONRenderer()
    return path


def get_logger(name: str, **context: object) -> structlog.stdlib.BoundLogger:
    """A logger with ``context`` bound (agent_id, run_id, event_id, ...).

    Lazy: modules create their loggers at import time, often before the command configured
    logging, and a logger bound then would keep structlog's default (console) output."""
    # The name travels as ``logger_name``: ``logger`` is a parameter of structlog's own.
    return cast("structlog.stdlib.BoundLogger", structlog.get_logger(logger_name=name, **context))


def _name_logger(
    _logger: object, _method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """``logger`` first, as the lines have always begun."""
    name = event.pop("logger_name", None)
    return {"logger": name, **event} if name is not None else event


bind_context = structlog.contextvars.bind_contextvars
clear_context = structlog.contextvars.clear_contextvars


#: librdkafka's log lines, for the ``logger`` key of every client's configuration. Without it
#: they are written straight to stderr by librdkafka's own threads (``%3|...|FAIL|...``), in the
#: middle of the tables and progress bars of ``chaos`` and ``bench``, at any log level.
KAFKA_LOGGER = logging.getLogger("agentstream.librdkafka")


_kafka_log = get_logger("librdkafka")


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        # librdkafka reports a broker it cannot reach as an error and retries on its own; what
        # the client gives up on reaches the code as an error it handles, so these are warnings.
        _kafka_log.log(min(record.levelno, logging.WARNING), record.getMessage())


KAFKA_LOGGER.addHandler(_ToStructlog())
KAFKA_LOGGER.propagate = False
KAFKA_LOGGER.setLevel(logging.DEBUG)
