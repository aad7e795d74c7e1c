"""Progress bars with rate and ETA for the long commands (replay, inspect from the topics), and
the parsing of the time and offset options they share."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from agentstream.schemas.errors import ConfigurationError
from agentstream.streams.replay_reader import OnProgress, Window, to_millis
from agentstream.streams.runtime.settings import Settings

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} records/s")


class RichTracker:
    """A :class:`~agentstream.streams.replay_reader.Tracker` drawing rich progress bars."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def start(self, description: str, total: int | None) -> OnProgress:
        task: TaskID = self.progress.add_task(description, total=total)

        def advance(done: int) -> None:
            self.progress.update(task, completed=done)

        return advance


@contextmanager
def tracking(console: Console) -> Iterator[RichTracker]:
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        "ETA",
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        yield RichTracker(progress)


def parse_moment(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (UTC unless it says otherwise), ``now``, or an age such as ``15m``,
    ``2h``, ``1d`` (that long ago)."""
    if text is None:
        return None
    value = text.strip()
    if value == "now":
        return datetime.now(UTC)
    relative = _RELATIVE.match(value)
    if relative:
        amount = float(relative.group(1))
        return datetime.now(UTC) - timedelta(**{_UNITS[relative.group(2)]: amount})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigurationError(
            f"{option} {text!r} is not a time",
            hint=f"use ISO 8601 ({option} 2026-01-31T09:30:00Z) or an age ({option} 15m)",
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def parse_window(
    settings: Settings,
    *,
    since: str | None,
    until: str | None,
    from_offsets: list[str] | None,
    to_offset: int | None,
) -> Window:
    """The window named by ``--since/--until`` and ``--from-offset/--to-offset``.

    ``--from-offset`` is ``N`` (every partition) or ``TOPIC:PARTITION=N`` (logical topic name),
    repeatable."""
    start: int | None = None
    starts: dict[tuple[str, int], int] = {}
    for item in from_offsets or []:
        where, sep, number = item.rpartition("=")
        try:
            offset = int(number)
            if sep:
                topic, _, partition = where.rpartition(":")
                if not topic:
                    raise ValueError(item)
                starts[(settings.topic(topic), int(partition))] = offset
            else:
                start = offset
        except ValueError:
            raise ConfigurationError(
                f"--from-offset {item!r}: expected N or TOPIC:PARTITION=N",
                hint="e.g. --from-offset 1200 or --from-offset agent.inputs:3=1200",
            ) from None
    begin, end = parse_moment(since, "--since"), parse_moment(until, "--until")
    if begin is not None and end is not None and begin > end:
        raise ConfigurationError(f"--since {since} is after --until {until}")
    return Window(to_millis(begin), to_millis(end), start, starts, to_offset)
