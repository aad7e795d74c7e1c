"""The agentstream services of the embedded stack, as supervised child processes.

``dev up`` and the demo start the processor, the workers and the projector beside the broker and
PostgreSQL; each is an ``agentstream`` command in its own process (as in production), dies with
its parent, and is restarted if it crashes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from agentstream.schemas.errors import EmbeddedStackError
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.settings import Settings
from agentstream.tools.devstack import stack_process

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
        #: restarts since the service last ran for a while (a crash loop counts up)
        self.restarts = 0
        #: set when it kept crashing: not restarted any more, the rest of the stack stays up
        self.given_up = False
        self.started_at = 0.0
        self._log_offset = 0

    @property
    def name(self) -> str:
        return self.command.name

    def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [sys.executable, "-m", "agentstream.tools.cli.app", *self.command.args]
        self.proc = stack_process.spawn(argv, log_path=self.log_path, env=self.env)
        self.started_at = time.monotonic()

    def is_ready(self) -> bool:
        """Whether the current incarnation logged its ready line."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(self._log_offset)
                return self.command.ready_marker.encode() in log_file.read()
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None, "start() first"
        stack_process.wait_until(
            self.is_ready,
            proc=self.proc,
            what=f"the {self.name}",
            log_path=self.log_path,
            timeout=timeout,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the service's process group, as a crash would."""
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; its exit code."""
        if self.proc is None:
            return None
        stack_process.stop(self.proc, sig=signal.SIGTERM, timeout=20)
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        return stack_process.log_tail(self.log_path, lines)


#: restarts in a row, each shorter than ``STEADY_S``, after which a service is given up on
CRASH_LOOP = 5
STEADY_S = 60.0


class ServiceSupervisor:
    """Starts services, waits until each is ready, restarts crashed ones, stops them all.

    ``inherit_settings=False`` keeps this process's own ``AGENTSTREAM_*`` variables from the
    services, so ``env`` alone configures them.
    """

    def __init__(
        self,
        commands: list[ServiceCommand],
        workdir: Path,
        env: dict[str, str],
        *,
        inherit_settings: bool = True,
    ) -> None:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if inherit_settings or not k.startswith("AGENTSTREAM_")
        }
        self.workdir = workdir
        self.env = {**inherited, **env, "AGENTSTREAM_LOG_FORMAT": "json"}
        self.services = [Service(c, workdir, self.env) for c in commands]

    def start(self, timeout: float = 60.0) -> None:
        for service in self.services:
            service.start()
        deadline = time.monotonic() + timeout
        for service in self.services:
            service.wait_ready(max(1.0, deadline - time.monotonic()))

    def add(self, command: ServiceCommand, timeout: float = 60.0) -> Service:
        """Start one more service (another member of a group, say) and wait until it is ready."""
        service = Service(command, self.workdir, self.env)
        self.services.append(service)
        service.start()
        service.wait_ready(timeout)
        return service

    def remove(self, name: str) -> int | None:
        """Stop one service (SIGTERM: it leaves its group) and forget it; its exit code."""
        service = next(s for s in self.services if s.name == name)
        self.services.remove(service)
        return service.stop()

    def check(self) -> list[Service]:
        """Restart any service that exited. One that keeps crashing (``CRASH_LOOP`` restarts,
        none of them lasting ``STEADY_S``) is given up on and returned, once: the others, the
        broker and the database stay up, so nothing of the stack's data is thrown away."""
        given_up = []
        for service in self.services:
            if service.proc is None or service.given_up or service.alive():
                continue
            if time.monotonic() - service.started_at >= STEADY_S:
                service.restarts = 0
            if service.restarts >= CRASH_LOOP:
                service.given_up = True
                log.error(
                    "service_given_up",
                    service=service.name,
                    restarts=service.restarts,
                    log=str(service.log_path),
                )
                given_up.append(service)
                continue
            log.warning(
                "service_restarted", service=service.name, exit_code=service.proc.returncode
            )
            service.restarts += 1
            service.start()
        return given_up

    def check_alive(self) -> None:
        """Fail on any service that exited (where a restart would hide a crash)."""
        for service in self.services:
            if not service.alive():
                raise EmbeddedStackError(
                    f"the {service.name} exited on its own:\n{service.log_tail()}"
                )

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.services if s.proc is not None]

    def stop(self) -> dict[str, int | None]:
        """SIGTERM each, in the reverse of the start order; their exit codes."""
        return {s.name: s.stop() for s in reversed(self.services)}


def service_environment(settings: Settings) -> dict[str, str]:
    """The endpoints, topic prefix, partitions and Kafka security of ``settings``, as the
    services read them, so that services started for a run reach a secured cluster too."""
    env = {
        "AGENTSTREAM_BOOTSTRAP_SERVERS": settings.require_bootstrap_servers(),
        "AGENTSTREAM_SCHEMA_REGISTRY_URL": settings.require_schema_registry_url(),
        "AGENTSTREAM_DATABASE_URL": settings.require_database_url(),
        "AGENTSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "AGENTSTREAM_PARTITIONS": str(settings.partitions),
        "AGENTSTREAM_PROCESSOR_TRANSACTIONS": str(settings.processor_transactions).lower(),
        "AGENTSTREAM_GROUP_SESSION_TIMEOUT_MS": str(settings.group_session_timeout_ms),
    }
    env.update(settings.security_environment())
    return env
