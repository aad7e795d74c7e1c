"""Runs one tool call to its end: idempotency key, timeout, retries with backoff and jitter,
and the tool's circuit breaker. Never raises for a tool's failure: the outcome is a
ToolCallCompleted or a ToolCallFailed event, or a ToolCallWaiting one when the tool returned
:class:`~agentstream.processors.workers.toolcontext.AwaitCallback`, and the agent's own logic
decides what follows."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from agentstream.processors.core.ids import arguments_hash, canonical_json
from agentstream.processors.core.spec import AgentSpec, ToolSpec
from agentstream.processors.errors import CallTimeoutError, WorkerError
from agentstream.processors.workers.breaker import BreakerRegistry
from agentstream.processors.workers.results import result_envelope
from agentstream.processors.workers.retry import (
    Attempted,
    attempt_with_retry,
    error_class,
    error_message,
    is_retryable,
)
from agentstream.processors.workers.toolcontext import (
    AwaitCallback,
    CallContext,
    callback_id_of,
    enter_call,
    exit_call,
)
from agentstream.schemas.errors import ConfigurationError
from agentstream.schemas.events import (
    ToolCallCompleted,
    ToolCallFailed,
    ToolCallRequested,
    ToolCallWaiting,
)
from agentstream.schemas.limits import MAX_RESULT_BYTES, utf8_size
from agentstream.streams.runtime.logs import get_logger

__all__ = [
    "RESULT_PURPOSE",
    "SOURCE",
    "ToolExecutor",
    "ToolResult",
    "tools_of",
]

log = get_logger(__name__)

ToolResult = ToolCallCompleted | ToolCallFailed | ToolCallWaiting
SOURCE = "tool-worker"
RESULT_PURPOSE = "tool-result"
#: Results above this stay out of events (the producer refuses values over 1 MB anyway).


class _Unusable(WorkerError):
    """The request cannot be run at all (unknown tool, bad arguments): no attempt is made."""


def tools_of(specs: Iterable[AgentSpec]) -> dict[str, ToolSpec]:
    """Every runnable tool of the agents, by name; one name must mean one function."""
    tools: dict[str, ToolSpec] = {}
    for spec in specs:
        for tool in spec.tools:
            known = tools.get(tool.name)
            if known is not None and known.func is not tool.func:
                raise ConfigurationError(f"two different tools are named {tool.name!r}")
            tools[tool.name] = tool
    return tools


class ToolExecutor:
    def __init__(
        self,
        tools: dict[str, ToolSpec],
        breakers: BreakerRegistry,
        *,
        threads: int = 16,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        remember: int = 10_000,
    ) -> None:
        self.tools = tools
        self.breakers = breakers
        self._rng = rng or random.Random()
        self._clock = clock
        self._wall_clock = wall_clock
        # Sync tools run here; a timed-out one keeps its thread until it returns, so the pool
        # is larger than the worker's concurrency.
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tool")
        self._remember = remember
        self._done: OrderedDict[str, ToolResult] = OrderedDict()
        self._running: dict[str, asyncio.Future[ToolResult]] = {}
        self.reused = 0

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def execute(self, request: ToolCallRequested) -> ToolResult:
        """The result event for ``request``. A request seen again (the processor re-sent its
        outbox) gets the remembered result instead of a second run of the side effect."""
        known = self._done.get(request.call_id)
        if known is not None:
            self.reused += 1
            return known
        running = self._running.get(request.call_id)
        if running is not None:
            self.reused += 1
            return await asyncio.shield(running)
        future: asyncio.Future[ToolResult] = asyncio.get_running_loop().create_future()
        self._running[request.call_id] = future
        try:
            result = await self._execute(request)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved when nobody else waits for it
            raise
        finally:
            self._running.pop(request.call_id, None)
        future.set_result(result)
        self._done[request.call_id] = result
        while len(self._done) > self._remember:
            self._done.popitem(last=False)
        return result

    async def _execute(self, request: ToolCallRequested) -> ToolResult:
        started = self._clock()
        try:
            tool, arguments = self._prepare(request)
        except _Unusable as exc:
            return self._failed(request, 0, exc, started)
        breaker = self.breakers.get(tool.name)

        def failed(_tool: ToolSpec, attempt: int, exc: BaseException) -> None:
            log.info(
                "tool_attempt_failed",
                tool=tool.name,
                call_id=request.call_id,
                attempt=attempt,
                error_class=error_class(exc),
                retryable=is_retryable(exc),
            )

        ended: Attempted[Any, ToolSpec] = await attempt_with_retry(
            lambda target, attempt: self._attempt(target, arguments, request, attempt),
            choose=lambda: tool if breaker.allow() else None,
            breaker=lambda _tool: breaker,
            policy=tool.retry,
            max_attempts=request.max_attempts,
            first=tool,
            rng=self._rng,
            closed=lambda: (
                f"the circuit breaker of tool {tool.name} is open "
                f"(retry in {breaker.retry_after():.1f}s)"
            ),
            on_failure=failed,
        )
        if ended.error is not None:
            return self._failed(request, ended.attempts, ended.error, started)
        if isinstance(ended.value, AwaitCallback):
            return self._waiting(request, ended.value, ended.attempts, started)
        return self._completed(request, ended.value, ended.attempts, started)

    def _prepare(self, request: ToolCallRequested) -> tuple[ToolSpec, dict[str, Any]]:
        tool = self.tools.get(request.tool)
        if tool is None or tool.func is None:
            raise _Unusable(f"this worker has no tool named {request.tool!r}")
        # The hash is what an approver approved: a request whose arguments do not hash to it
        # was altered on the way and must not run.
        if arguments_hash(request.arguments_json) != request.arguments_hash:
            raise _Unusable("the arguments do not match their hash")
        try:
            arguments = json.loads(request.arguments_json)
        except ValueError as exc:
            raise _Unusable(f"the arguments are not JSON: {exc}") from exc
        except RecursionError:
            raise _Unusable("the arguments are nested too deeply") from None
        if not isinstance(arguments, dict):
            raise _Unusable("the arguments must be a JSON object")
        return tool, arguments

    async def _attempt(
        self, tool: ToolSpec, arguments: dict[str, Any], request: ToolCallRequested, attempt: int
    ) -> Any:
        func = tool.func
        assert func is not None
        context = CallContext(
            call_id=request.call_id,
            attempt=attempt,
            agent_id=request.envelope.agent_id,
            tenant_id=request.envelope.tenant_id,
            run_id=request.envelope.run_id,
            tool=tool.name,
        )
        timeout = request.timeout_ms / 1000
        token = enter_call(context)
        try:
            if inspect.iscoroutinefunction(func):
                pending: Any = func(**arguments)
            else:
                call = functools.partial(contextvars.copy_context().run, func, **arguments)
                pending = asyncio.get_running_loop().run_in_executor(self._threads, call)
            return await asyncio.wait_for(pending, timeout)
        except TimeoutError as exc:
            raise CallTimeoutError(f"attempt {attempt} took longer than {timeout:g}s") from exc
        finally:
            exit_call(token)

    def _completed(
        self, request: ToolCallRequested, value: Any, attempts: int, started: float
    ) -> ToolResult:
        try:
            result_json = canonical_json(value)
            if not result_json.isascii():
                # A lone surrogate cannot go into an event (UTF-8); escaped it can.
                result_json.encode("utf-8")
        except UnicodeEncodeError:
            result_json = json.dumps(value, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            # The side effect happened: report, do not retry.
            return self._failed(request, attempts, exc, started)
        size = utf8_size(result_json)
        if size > MAX_RESULT_BYTES:
            too_big = WorkerError(
                f"the result is {size:,} bytes, over the {MAX_RESULT_BYTES:,}-byte limit of a "
                "tool result (return a reference to large data)"
            )
            return self._failed(request, attempts, too_big, started)
        return ToolCallCompleted(
            envelope=result_envelope(
                request, call_id=request.call_id, purpose=RESULT_PURPOSE, source=SOURCE
            ),
            call_id=request.call_id,
            tool=request.tool,
            result_json=result_json,
            attempts=attempts,
            latency_ms=self._elapsed_ms(started),
        )

    def _waiting(
        self, request: ToolCallRequested, wait: AwaitCallback, attempts: int, started: float
    ) -> ToolResult:
        now = self._wall_clock()
        waiting = ToolCallWaiting(
            envelope=result_envelope(
                request, call_id=request.call_id, purpose=RESULT_PURPOSE, source=SOURCE, now=now
            ),
            call_id=request.call_id,
            tool=request.tool,
            callback_id=callback_id_of(request.call_id),
            expires_at=now + timedelta(seconds=wait.timeout_s),
            attempts=attempts,
            latency_ms=self._elapsed_ms(started),
        )
        log.info(
            "tool_call_waiting",
            tool=request.tool,
            call_id=request.call_id,
            callback_id=waiting.callback_id,
            expires_at=waiting.expires_at.isoformat(),
            detail=wait.detail,
        )
        return waiting

    def _failed(
        self, request: ToolCallRequested, attempts: int, exc: BaseException, started: float
    ) -> ToolResult:
        return ToolCallFailed(
            envelope=result_envelope(
                request, call_id=request.call_id, purpose=RESULT_PURPOSE, source=SOURCE
            ),
            call_id=request.call_id,
            tool=request.tool,
            attempts=attempts,
            error_class=error_class(exc),
            error_message=error_message(exc),
            latency_ms=self._elapsed_ms(started),
        )

    def _elapsed_ms(self, started: float) -> int:
        return max(0, int((self._clock() - started) * 1000))
