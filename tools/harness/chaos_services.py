"""The services of a chaos or soak run: every service of ``dev up``, on groups of their own,
configured by the run's settings alone (``tools.services`` starts, kills and stops them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agentstream.projections.migrate import migrate
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.topics import ensure_topics
from agentstream.tools.devstack.services import (
    ServiceCommand,
    ServiceSupervisor,
    service_environment,
)


def prepare_services(
    spec: str | Sequence[str], settings: Settings, schema: str, workdir: Path, default_prefix: str
) -> ServiceSupervisor:
    """Topics and tables ready, and the services of a run (not yet started), configured by
    ``settings`` alone; their groups are named after the topic prefix, else ``default_prefix``."""
    ensure_topics(settings)
    migrate(settings.require_database_url(), schema)
    return ServiceSupervisor(
        reliability_services(spec, settings.topic_prefix or default_prefix, schema),
        workdir,
        service_environment(settings),
        inherit_settings=False,
    )


def reliability_services(
    spec: str | Sequence[str], prefix: str, schema: str, *, instance: int = 1
) -> list[ServiceCommand]:
    """Every service of ``dev up``, with groups of their own (``prefix``) and static member ids
    where the service has them, so a restarted member takes its partitions back at once.
    ``spec``: the agent, or several paths (the kinds of a team, each given as a ``--spec``).

    ``instance`` > 1 gives further members of the same groups (named ``processor-2`` and so on)
    for scale-out runs. Those are dynamic members: one that stops leaves its group at once,
    where a static member sends no LeaveGroup and its partitions wait for its session to time
    out.
    """

    specs = tuple(
        a for path in ([spec] if isinstance(spec, str) else spec) for a in ("--spec", path)
    )

    def group(name: str) -> tuple[str, ...]:
        if instance > 1:
            return ("--group", f"{prefix}{name}")
        return ("--group", f"{prefix}{name}", "--instance-id", f"{prefix}{name}-1")

    commands = [
        ServiceCommand(
            "processor",
            ("processor", "run", *specs, *group("processor")),
            "processor_started",
        ),
        ServiceCommand(
            "tool-worker",
            ("worker", "tools", "run", *specs, *group("tools")),
            "worker_started",
        ),
        ServiceCommand(
            "model-worker",
            ("worker", "models", "run", *specs, *group("models")),
            "worker_started",
        ),
        ServiceCommand(
            "approval-timer",
            ("worker", "timers", "run", "--group", f"{prefix}timer"),
            "worker_started",
        ),
        ServiceCommand(
            "projector",
            ("projections", "run", "--schema", schema, *group("projector"), "--max-backoff", "1"),
            "projector_started",
        ),
    ]
    if instance == 1:
        return commands
    return [
        ServiceCommand(f"{c.name}-{instance}", c.args, c.ready_marker)
        for c in commands
        if c.name != "approval-timer"  # one timer is enough; its group is not scaled here
    ]
