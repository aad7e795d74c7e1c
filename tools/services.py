"""The agentstream services of the embedded stack, as supervised child processes.

``dev up`` and the demo start the processor, the workers and the projector beside the broker and
PostgreSQL; each is an ``agentstream`` command in its own process (as in production), dies with
its parent, and is restarted if it crashes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agentstream.schemas.errors import EmbeddedStackError
from agentstream.streams.logs import get_logger
from agentstream.tools import stack_process

log = get_logger(__name__)


@dataclass(frozen=True)
class ServiceCommand:
    """One service: the ``agentstream`` arguments that run it and the log line that means ready."""

    name: str
    args: tuple[str, ...]
    ready_marker: str


class Service:
    def __init__(self, command: ServiceCommand, workdir: Path, env: dict[str, str]) -> None:
        self.command = command
        self.env = env
        self.log_path = workdir / f"{command.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._log_offset = 0

    def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [sys.executable, "-m", "agentstream.tools.cli", *self.command.args]
        self.proc = stack_process.spawn(argv, log_path=self.log_path, env=self.env)

    def is_ready(self) -> bool:
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self._log_offset)
                return self.command.ready_marker.encode() in log_file.read()
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stack_process.stop(self.proc, sig=signal.SIGTERM, timeout=20)


class ServiceSupervisor:
    """Starts services, waits until each is ready, restarts crashed ones, stops them all."""

    def __init__(self, commands: list[ServiceCommand], workdir: Path, env: dict[str, str]) -> None:
        full_env = {**os.environ, **env, "AGENTSTREAM_LOG_FORMAT": "json"}
        self.services = [Service(c, workdir, full_env) for c in commands]

    def start(self, timeout: float = 60.0) -> None:
        for service in self.services:
            service.start()
        deadline = time.monotonic() + timeout
        for service in self.services:
            assert service.proc is not None
            stack_process.wait_until(
                service.is_ready,
                proc=service.proc,
                what=f"the {service.command.name}",
                log_path=service.log_path,
                timeout=max(1.0, deadline - time.monotonic()),
            )

    def check(self) -> None:
        """Restart any service that exited; give up on one that keeps crashing."""
        for service in self.services:
            if service.proc is None or service.proc.poll() is None:
                continue
            if service.restarts >= 5:
                raise EmbeddedStackError(
                    f"the {service.command.name} keeps crashing:\n"
                    f"{stack_process.log_tail(service.log_path)}"
                )
            log.warning(
                "service_restarted", service=service.command.name, exit_code=service.proc.returncode
            )
            service.restarts += 1
            service.start()

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.services if s.proc is not None]

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
