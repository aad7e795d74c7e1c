"""CPU seconds of every process a measurement involves: this one, its descendants (servers,
workers, PostgreSQL backends) and whatever else a peer names."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import psutil


def _process_seconds(proc: psutil.Process) -> float:
    # A child that exited and was reaped moves its time into the parent's children_* fields,
    # so short-lived backends still count and nothing counts twice.
    times = proc.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def tree(extra_pids: Iterable[int] = ()) -> list[psutil.Process]:
    """This process, its descendants, and ``extra_pids`` with theirs, each once."""
    roots = [psutil.Process()]
    for pid in extra_pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            roots.append(psutil.Process(pid))
    seen: dict[int, psutil.Process] = {}
    for root in roots:
        seen.setdefault(root.pid, root)
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in root.children(recursive=True):
                seen.setdefault(child.pid, child)
    return list(seen.values())


class CpuMeter:
    """CPU seconds used between ``begin`` and ``end`` by the process tree."""

    def __init__(self, extra_pids: Iterable[int] = ()) -> None:
        self._extra = list(extra_pids)
        self._start: dict[int, float] = {}

    def _sample(self) -> dict[int, float]:
        sample: dict[int, float] = {}
        for proc in tree(self._extra):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                sample[proc.pid] = _process_seconds(proc)
        return sample

    def begin(self) -> None:
        self._start = self._sample()

    def end(self) -> float:
        """Seconds since ``begin``. Totals, not per-process deltas: a process that ended in
        between has its time in its parent's children_* fields now, and one that started in
        between counts from zero."""
        return max(0.0, sum(self._sample().values()) - sum(self._start.values()))
