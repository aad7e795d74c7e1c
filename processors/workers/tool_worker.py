"""The tool worker: ``agent.tool-calls`` in, ``agent.tool-results`` out, on Faust."""

from __future__ import annotations

import time
from collections.abc import Sequence

from agentstream.processors.core.spec import AgentSpec
from agentstream.processors.workers.breaker import BreakerPolicy, BreakerRegistry
from agentstream.processors.workers.faust_worker import FaustCallWorker, WorkerStats
from agentstream.processors.workers.tool_executor import ToolExecutor, tools_of
from agentstream.schemas.errors import ConfigurationError
from agentstream.schemas.events import Event, ToolCallRequested
from agentstream.streams.runtime import metrics
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde
from agentstream.streams.topics import TOOL_CALLS

__all__ = [
    "DEFAULT_GROUP",
    "ToolWorker",
]

log = get_logger(__name__)

DEFAULT_GROUP = "agentstream-tool-worker"


class ToolWorker:
    """Runs the tools of ``specs`` for every tool call request, ``concurrency`` at a time."""

    def __init__(
        self,
        settings: Settings,
        specs: Sequence[AgentSpec],
        *,
        concurrency: int = 8,
        group_id: str = DEFAULT_GROUP,
        breaker: BreakerPolicy | None = None,
        serde: EventSerde | None = None,
        instance_id: str | None = None,
    ) -> None:
        tools = {name: t for name, t in tools_of(specs).items() if t.func is not None}
        if not tools:
            raise ConfigurationError("no tool with a function to run in the given agent specs")
        self.breakers = BreakerRegistry("tool", breaker or BreakerPolicy())
        self.executor = ToolExecutor(tools, self.breakers, threads=max(16, 2 * concurrency))
        self.runtime = FaustCallWorker(
            settings,
            name="tool_worker",
            group_id=group_id,
            requests=TOOL_CALLS,
            request_type=ToolCallRequested,
            handle=self._handle,
            concurrency=concurrency,
            serde=serde,
            instance_id=instance_id,
        )

    async def _handle(self, request: Event) -> Event:
        assert isinstance(request, ToolCallRequested)
        started = time.perf_counter()
        result = await self.executor.execute(request)
        outcome = type(result).__name__
        metrics.observe_call(
            "tool", request.tool, outcome, time.perf_counter() - started, result.attempts
        )
        breakers = self.breakers.states()
        metrics.set_breakers("tool", breakers)
        log.info(
            "tool_call_finished",
            tool=request.tool,
            call_id=request.call_id,
            agent_id=request.envelope.agent_id,
            run_id=request.envelope.run_id,
            outcome=outcome,
            attempts=result.attempts,
            latency_ms=result.latency_ms,
            breaker=breakers.get(request.tool),
        )
        return result

    def run(self) -> WorkerStats:
        try:
            return self.runtime.run()
        finally:
            self.executor.close()
            log.info(
                "tool_worker_breakers",
                states=self.breakers.states(),
                transitions={"/".join(k): v for k, v in self.breakers.transitions.items()},
                reused_results=self.executor.reused,
            )

    def stop(self) -> None:
        self.runtime.stop()

    def install_signal_handlers(self) -> None:
        self.runtime.install_signal_handlers()
