"""The agentstream services as child processes a chaos or soak run can SIGKILL and restart.

Each service is the real ``agentstream`` command in its own process group (so a SIGKILL takes
its whole tree), dies with its parent, and logs JSON lines to a file of its own; ``ready``
looks for the service's ready line in the current incarnation's part of that file.
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
from agentstream.streams.settings import Settings
from agentstream.tools import stack_process


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    args: tuple[str, ...]
    ready_marker: str


def reliability_services(spec: str, prefix: str, schema: str) -> list[ServiceSpec]:
    """Every service of ``dev up``, with groups of their own (``prefix``) and static member ids
    where the service has them, so a restarted member takes its partitions back at once."""

    def group(name: str) -> tuple[str, ...]:
        return ("--group", f"{prefix}{name}", "--instance-id", f"{prefix}{name}-1")

    return [
        ServiceSpec(
            "processor",
            ("processor", "run", "--spec", spec, *group("processor")),
            "processor_started",
        ),
        ServiceSpec(
            "tool-worker",
            ("worker", "tools", "run", "--spec", spec, *group("tools")),
            "worker_started",
        ),
        ServiceSpec(
            "model-worker",
            ("worker", "models", "run", "--spec", spec, *group("models")),
            "worker_started",
        ),
        ServiceSpec(
            "approval-timer",
            ("worker", "timers", "run", "--group", f"{prefix}timer"),
            "worker_started",
        ),
        ServiceSpec(
            "projector",
            ("projections", "run", "--schema", schema, *group("projector"), "--max-backoff", "1"),
            "projector_started",
        ),
    ]


def service_environment(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
    env.update(
        {
            "AGENTSTREAM_BOOTSTRAP_SERVERS": settings.require_bootstrap_servers(),
            "AGENTSTREAM_SCHEMA_REGISTRY_URL": settings.require_schema_registry_url(),
            "AGENTSTREAM_DATABASE_URL": settings.require_database_url(),
            "AGENTSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "AGENTSTREAM_PARTITIONS": str(settings.partitions),
            "AGENTSTREAM_LOG_FORMAT": "json",
        }
    )
    return env


class ManagedService:
    """One service: start, SIGKILL, restart, stop; its pid for memory readings."""

    def __init__(self, spec: ServiceSpec, workdir: Path, env: dict[str, str]) -> None:
        self.spec = spec
        self.workdir = workdir
        self.env = env
        self.log_path = workdir / f"{spec.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0
        self._log_offset = 0

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [sys.executable, "-m", "agentstream.tools.cli", *self.spec.args]
        # cwd: Faust creates a data directory where it runs
        self.proc = stack_process.spawn(
            argv, log_path=self.log_path, env=self.env, cwd=self.workdir
        )
        self.starts += 1

    def ready(self) -> bool:
        with contextlib.suppress(OSError), self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return self.spec.ready_marker.encode() in log.read()
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.proc is not None, "start() first"
        stack_process.wait_until(
            self.ready,
            proc=self.proc,
            what=f"the {self.name}",
            log_path=self.log_path,
            timeout=timeout,
        )

    def kill(self) -> None:
        """SIGKILL the service's process group, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.kills += 1

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        stack_process.stop(self.proc, sig=signal.SIGTERM, timeout=timeout)
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        return stack_process.log_tail(self.log_path, lines)


class ServiceSet:
    """All services of a run; stops every one it started, also on errors."""

    def __init__(self, specs: list[ServiceSpec], workdir: Path, env: dict[str, str]) -> None:
        self.services = [ManagedService(s, workdir, env) for s in specs]

    def by_name(self, name: str) -> ManagedService:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def start(self, timeout: float = 90.0) -> None:
        for service in self.services:
            service.start()
        deadline = time.monotonic() + timeout
        for service in self.services:
            service.wait_ready(max(1.0, deadline - time.monotonic()))

    def check_alive(self) -> None:
        for service in self.services:
            if not service.alive():
                raise EmbeddedStackError(
                    f"the {service.name} exited on its own:\n{service.log_tail()}"
                )

    def stop(self) -> dict[str, int | None]:
        """SIGTERM each (the reverse of the start order); their exit codes."""
        return {s.name: s.stop() for s in reversed(self.services)}
