"""Everything ``dev up`` and the demo run: the development stack, topics, tables and services."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.subjects import ensure_subjects
from agentstream.streams.topics import ensure_topics
from agentstream.tools.devstack.services import Service, ServiceCommand, ServiceSupervisor
from agentstream.tools.devstack.stack import BrokerKind, EmbeddedStack, StackEndpoints

log = get_logger(__name__)


def dev_services(spec: str | Sequence[str]) -> list[ServiceCommand]:
    """The services beside the broker, the registry and PostgreSQL. The processor and both
    workers get every spec: the processor serves each kind, the workers run their tools and
    models."""
    specs = tuple(
        f for path in ([spec] if isinstance(spec, str) else spec) for f in ("--spec", path)
    )
    return [
        ServiceCommand("processor", ("processor", "run", *specs), "processor_started"),
        ServiceCommand("tool-worker", ("worker", "tools", "run", *specs), "worker_started"),
        ServiceCommand("model-worker", ("worker", "models", "run", *specs), "worker_started"),
        ServiceCommand("approval-timer", ("worker", "timers", "run"), "worker_started"),
        ServiceCommand("projector", ("projections", "run"), "projector_started"),
    ]


@dataclass
class RunningStack:
    stack: EmbeddedStack
    endpoints: StackEndpoints
    settings: Settings
    supervisor: ServiceSupervisor | None
    ready_seconds: float

    def check(self) -> list[Service]:
        """Fails if the broker or the database died; restarts crashed services and returns
        those it gave up on (the stack stays up without them)."""
        self.stack.check_alive()
        return self.supervisor.check() if self.supervisor is not None else []


@contextmanager
def full_stack(
    spec: str | Sequence[str],
    *,
    data_dir: Path | None = None,
    services: bool = True,
    broker: BrokerKind = BrokerKind.EMBEDDED,
) -> Iterator[RunningStack]:
    """Start it all, hand it over when ready, stop it all afterwards (also on errors)."""
    from agentstream.projections.migrate import migrate

    began = time.monotonic()
    stack = EmbeddedStack(data_dir=data_dir, broker=broker)
    supervisor: ServiceSupervisor | None = None
    try:
        endpoints = stack.start()
        settings = Settings(**endpoints.__dict__)
        if services:
            ensure_topics(settings)
            ensure_subjects(settings)
            migrate(settings.require_database_url())
            supervisor = ServiceSupervisor(
                dev_services(spec), stack.workdir, _service_environment(endpoints)
            )
            supervisor.start()
        yield RunningStack(stack, endpoints, settings, supervisor, time.monotonic() - began)
    finally:
        if supervisor is not None:
            supervisor.stop()
        stack.stop()


def _service_environment(endpoints: StackEndpoints) -> dict[str, str]:
    env = endpoints.environment()
    asked = os.environ.get("AGENTSTREAM_METRICS_PORT", "").strip()
    if asked not in ("", "0"):
        # Five services cannot share one port: the second would fail to start.
        env["AGENTSTREAM_METRICS_PORT"] = "0"
        log.warning(
            "metrics_port_per_service",
            asked=asked,
            reason="each service takes a free port and logs it as metrics_listening",
        )
    return env
