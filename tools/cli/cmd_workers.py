"""``agentstream worker``: the workers that run side effects (tools, models, timers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from agentstream.processors.loading import DEFAULT_SPEC, load_catalog
from agentstream.schemas.errors import ConfigurationError
from agentstream.streams.runtime.health import observability
from agentstream.streams.runtime.settings import load_settings
from agentstream.streams.topics import ensure_topics
from agentstream.tools.cli.options import (
    ConcurrencyOption,
    CooldownOption,
    InstanceOption,
    MetricsPortOption,
    SpecsOption,
    ThresholdOption,
    err,
)

if TYPE_CHECKING:
    from agentstream.processors.workers.breaker import BreakerPolicy

app = typer.Typer(
    help="Workers that run side effects: tools, models, timers.", no_args_is_help=True
)
tools_app = typer.Typer(help="The tool worker.", no_args_is_help=True)
app.add_typer(tools_app, name="tools")
models_app = typer.Typer(help="The model worker.", no_args_is_help=True)
app.add_typer(models_app, name="models")
timers_app = typer.Typer(
    help="The timer worker: approval expiries, sleeps, callback timeouts.", no_args_is_help=True
)
app.add_typer(timers_app, name="timers")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="worker")


def _breaker_policy(threshold: int, cooldown: float) -> BreakerPolicy:
    # Imported here like every service module: importing one binds its module logger, which
    # must happen after the root callback configured logging.
    from agentstream.processors.workers.breaker import BreakerPolicy

    return BreakerPolicy(failure_threshold=threshold, cooldown_s=cooldown)


@tools_app.command("run")
def worker_tools_run(
    *,
    spec: SpecsOption = None,
    concurrency: ConcurrencyOption = 8,
    group: Annotated[str, typer.Option(help="Consumer group shared by all instances.")] = (
        "agentstream-tool-worker"
    ),
    instance_id: InstanceOption = None,
    breaker_threshold: ThresholdOption = 5,
    breaker_cooldown: CooldownOption = 30.0,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Run the agents' tools for every tool call request until SIGTERM or Ctrl-C."""
    from agentstream.processors.workers.tool_worker import ToolWorker

    settings = load_settings()
    # every version's tools: a run pinned to an older version still calls its own
    agents = list(load_catalog(spec or [DEFAULT_SPEC]).specs)
    ensure_topics(settings)
    worker = ToolWorker(
        settings,
        agents,
        concurrency=concurrency,
        group_id=group,
        breaker=_breaker_policy(breaker_threshold, breaker_cooldown),
        instance_id=instance_id,
    )
    worker.install_signal_handlers()
    tools = ", ".join(sorted(worker.executor.tools))
    err.print(f"tool worker running {tools} in group {group!r}; Ctrl-C stops it")
    with observability("tool-worker", worker.runtime.readiness, settings, metrics_port):
        stats = worker.run()
    err.print(f"tool worker stopped: {stats.results} results, {stats.dead_lettered} dead-lettered")
    if stats.failed:
        raise typer.Exit(1)


@models_app.command("run")
def worker_models_run(
    *,
    provider: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=BASE_URL of an OpenAI-compatible server (key from "
            "AGENTSTREAM_<NAME>_API_KEY), or NAME=scripted; repeatable. "
            "'scripted' is always there."
        ),
    ] = None,
    spec: SpecsOption = None,
    concurrency: ConcurrencyOption = 8,
    group: Annotated[str, typer.Option(help="Consumer group shared by all instances.")] = (
        "agentstream-model-worker"
    ),
    instance_id: InstanceOption = None,
    rate_limit: Annotated[
        float | None, typer.Option(min=0.001, help="Calls per second to each HTTP provider.")
    ] = None,
    max_attempts: Annotated[int, typer.Option(min=1, max=20)] = 3,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per attempt.")] = 120.0,
    breaker_threshold: ThresholdOption = 5,
    breaker_cooldown: CooldownOption = 30.0,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Answer every model call request with the configured providers until SIGTERM or Ctrl-C.

    With --spec, refuses to start when an agent's model or fallback provider is not configured.
    """
    from agentstream.processors.core.spec import RetryPolicy
    from agentstream.processors.workers.model_worker import ModelWorker, ProviderConfig

    settings = load_settings()
    providers = [ProviderConfig.parse(p, rate_limit) for p in provider or []]
    known = {p.name for p in providers} | {"scripted"}
    # one catalog of every path: a kind that delegates names kinds that other paths give
    for agent in load_catalog(spec).specs if spec else ():
        model = agent.model
        for name in {n for n in (model.provider, model.fallback_provider) if n}:
            if name not in known:
                raise ConfigurationError(
                    f"agent {agent.label} uses provider {name!r}, which is not configured",
                    hint=f"add --provider {name}=BASE_URL",
                )
    ensure_topics(settings)
    worker = ModelWorker(
        settings,
        providers,
        concurrency=concurrency,
        group_id=group,
        breaker=_breaker_policy(breaker_threshold, breaker_cooldown),
        retry=RetryPolicy(max_attempts=max_attempts),
        timeout_s=timeout,
        instance_id=instance_id,
    )
    worker.install_signal_handlers()
    names = ", ".join(worker.providers)
    err.print(f"model worker running providers {names} in group {group!r}; Ctrl-C stops it")
    with observability("model-worker", worker.runtime.readiness, settings, metrics_port):
        stats = worker.run()
    err.print(f"model worker stopped: {stats.results} results, {stats.dead_lettered} dead-lettered")
    if stats.failed:
        raise typer.Exit(1)


@timers_app.command("run")
def worker_timers_run(
    group: Annotated[str, typer.Option(help="Consumer group shared by all instances.")] = (
        "agentstream-approval-timer"
    ),
    metrics_port: MetricsPortOption = None,
    clock_offset: Annotated[
        float,
        typer.Option(
            help="Drills and tests only: run this many seconds ahead of the real clock, so a "
            "two-hour sleep ends now (7200). Never in production: runs would time out early.",
        ),
    ] = 0.0,
) -> None:
    """Expire approval requests that have no decision by their deadline, and fire durable
    timers (sleeps, callback timeouts) at their time."""
    from agentstream.processors.workers.timer_worker import TimerWorker

    settings = load_settings()
    ensure_topics(settings)
    timer = TimerWorker(settings, group_id=group, clock_offset_s=clock_offset)
    timer.install_signal_handlers()
    shifted = f", {clock_offset:+g}s ahead of the clock (a drill)" if clock_offset else ""
    err.print(f"timer worker running in group {group!r}{shifted}; Ctrl-C stops it")
    with observability("timer", timer.readiness, settings, metrics_port):
        stats = timer.run()
    err.print(
        f"timer worker stopped: {stats.expired} approvals expired, {stats.fired} timers fired"
    )
