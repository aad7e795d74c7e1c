"""What every long-running agentstream service shares: a stop that is safe from signal handlers
and other threads, SIGTERM and SIGINT handled, a watchdog for a stop that hangs, and readiness.

Processor, projector, approval timer and the tool and model workers each run their own loop;
how they stop is decided here once."""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType

from agentstream.streams.runtime.health import Readiness
from agentstream.streams.runtime.logs import get_logger

__all__ = ["EXIT_STOP_TIMED_OUT", "STOP_TIMEOUT_S", "BatchStats", "Service"]

log = get_logger(__name__)

#: how long a stopping service may take to finish its batch and close before the watchdog ends it
STOP_TIMEOUT_S = 20.0
#: the exit code of a service the watchdog ended (EX_TEMPFAIL: a supervisor restarts it)
EXIT_STOP_TIMED_OUT = 75


@dataclass
class BatchStats:
    """What a service that consumes in batches counts, logged when it stops."""

    batches: int = 0
    consumed: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0


class Service:
    """Base of the services. Subclasses run their loop while :attr:`stop_requested` is false."""

    #: the service's name in its log events (``processor_stop_timed_out``, ...)
    name: str

    def __init__(self, readiness: Readiness, *, stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.readiness = readiness
        self.stop_timeout_s = stop_timeout_s
        self._stop = threading.Event()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Finish the current batch (or the calls in flight), then close. Safe from signal
        handlers and other threads."""
        self._stop.set()
        self._wake()

    def _wake(self) -> None:
        """For a loop that waits on something else than :meth:`wait`: wake it up."""

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, less if a stop is requested meanwhile; whether it was."""
        return self._stop.wait(seconds)

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the service; one that has not stopped ``stop_timeout_s``
        later exits anyway."""

        def handle(_signum: int, _frame: FrameType | None) -> None:
            if self._stop.is_set():
                return
            self.stop()
            # librdkafka can block for good in a flush or in close (seen: an orphaned processor
            # stuck in the revoke callback for an hour). Exiting without a clean close is as
            # safe as a crash, which every service's protocol covers.
            watchdog = threading.Timer(self.stop_timeout_s, self._abandon_stop)
            watchdog.daemon = True
            watchdog.start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def _abandon_stop(self) -> None:
        # Where it hung goes to stderr (the service's log) so a hang explains itself.
        log.error(f"{self.name}_stop_timed_out", seconds=self.stop_timeout_s)
        faulthandler.dump_traceback(all_threads=True)
        os._exit(EXIT_STOP_TIMED_OUT)
