"""The model worker: ``agent.model-calls`` in, ``agent.model-results`` out, on Faust."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from agentstream.processors.core.spec import RetryPolicy
from agentstream.processors.workers.breaker import BreakerPolicy, BreakerRegistry
from agentstream.processors.workers.faust_worker import FaustCallWorker, WorkerStats
from agentstream.processors.workers.model_adapters import ModelAdapter
from agentstream.processors.workers.model_executor import ModelExecutor
from agentstream.processors.workers.model_openai import OpenAICompatibleModel
from agentstream.processors.workers.model_scripted import ScriptedModel
from agentstream.processors.workers.ratelimit import TokenBucket
from agentstream.schemas.errors import ConfigurationError
from agentstream.schemas.events import Event, ModelCallCompleted, ModelCallRequested
from agentstream.streams.runtime import metrics
from agentstream.streams.runtime.logs import get_logger
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import EventSerde
from agentstream.streams.topics import MODEL_CALLS

__all__ = [
    "DEFAULT_GROUP",
    "SCRIPTED",
    "ModelWorker",
    "ProviderConfig",
]

log = get_logger(__name__)

DEFAULT_GROUP = "agentstream-model-worker"
SCRIPTED = "scripted"


@dataclass(frozen=True)
class ProviderConfig:
    """A provider name as agents' ModelSpec use it, and where it is served.

    ``base_url`` None means the offline scripted model. The API key is read from the
    environment variable ``AGENTSTREAM_<NAME>_API_KEY`` so it never appears on a command line.
    """

    name: str
    base_url: str | None = None
    rate_per_s: float | None = None
    burst: int = 5

    @classmethod
    def parse(cls, text: str, rate_per_s: float | None = None) -> ProviderConfig:
        """``NAME=BASE_URL`` (an OpenAI-compatible server) or ``NAME=scripted``."""
        name, sep, target = text.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9._-]+", name) or not target:
            raise ConfigurationError(
                f"provider {text!r} is not NAME=BASE_URL or NAME=scripted",
                hint="for example --provider openai=https://api.openai.com/v1",
            )
        if target == SCRIPTED:
            return cls(name)
        if not re.match(r"^https?://", target):
            raise ConfigurationError(f"provider {name}: {target!r} is not an http(s) URL")
        return cls(name, target, rate_per_s)

    def api_key_variable(self) -> str:
        return "AGENTSTREAM_" + re.sub(r"[^A-Z0-9]", "_", self.name.upper()) + "_API_KEY"

    def adapter(self, timeout_s: float) -> ModelAdapter:
        if self.base_url is None:
            return ScriptedModel()
        key = os.environ.get(self.api_key_variable())
        return OpenAICompatibleModel(self.base_url, key, timeout_s=timeout_s)


class ModelWorker:
    """Answers every model call request with the configured providers."""

    def __init__(
        self,
        settings: Settings,
        providers: Sequence[ProviderConfig] = (),
        *,
        concurrency: int = 8,
        group_id: str = DEFAULT_GROUP,
        breaker: BreakerPolicy | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 120.0,
        serde: EventSerde | None = None,
        instance_id: str | None = None,
    ) -> None:
        configs = {p.name: p for p in providers}
        configs.setdefault(SCRIPTED, ProviderConfig(SCRIPTED))
        self.breakers = BreakerRegistry("model", breaker or BreakerPolicy())
        self.executor = ModelExecutor(
            {name: c.adapter(timeout_s) for name, c in configs.items()},
            self.breakers,
            limits={
                name: TokenBucket(c.rate_per_s, c.burst)
                for name, c in configs.items()
                if c.rate_per_s
            },
            retry=retry,
            timeout_s=timeout_s,
        )
        self.providers = sorted(configs)
        self.runtime = FaustCallWorker(
            settings,
            name="model_worker",
            group_id=group_id,
            requests=MODEL_CALLS,
            request_type=ModelCallRequested,
            handle=self._handle,
            concurrency=concurrency,
            serde=serde,
            instance_id=instance_id,
            on_stop=self.executor.aclose,
        )

    async def _handle(self, request: Event) -> Event:
        assert isinstance(request, ModelCallRequested)
        started = time.perf_counter()
        result = await self.executor.execute(request)
        metrics.observe_call(
            "model",
            result.provider,
            type(result).__name__,
            time.perf_counter() - started,
            result.attempts,
        )
        metrics.set_breakers("model", self.breakers.states())
        if isinstance(result, ModelCallCompleted):
            envelope = request.envelope
            metrics.count_tokens(
                envelope.tenant_id,
                envelope.agent_id,
                result.usage.prompt_tokens,
                result.usage.completion_tokens,
            )
        log.info(
            "model_call_finished",
            call_id=request.call_id,
            agent_id=request.envelope.agent_id,
            run_id=request.envelope.run_id,
            outcome=type(result).__name__,
            provider=result.provider,
            attempts=result.attempts,
            fallback_used=getattr(result, "fallback_used", False),
        )
        return result

    def run(self) -> WorkerStats:
        try:
            return self.runtime.run()
        finally:
            log.info(
                "model_worker_breakers",
                states=self.breakers.states(),
                transitions={"/".join(k): v for k, v in self.breakers.transitions.items()},
            )

    def stop(self) -> None:
        self.runtime.stop()

    def install_signal_handlers(self) -> None:
        self.runtime.install_signal_handlers()
