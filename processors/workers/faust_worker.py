"""The runtime shared by the tool and model workers: a Faust consumer of one request topic
that runs up to ``concurrency`` calls at once and sends each call's result event.

Per request: decode (undecodable or misplaced records go to ``agent.dlq``), run the call, produce
the result and wait for the broker's acknowledgement, and only then ack the record. Records are
acked to Faust in offset order per partition (``InOrderAcks``), so the committed offset never
passes a call that has not finished: a crash re-delivers every unfinished call, which runs again
with the same idempotency key and yields a result with the same event id.

One Faust actor reads the stream and hands records to tasks, instead of Faust's own
``concurrency=N`` actors: their out-of-order acks can make Faust commit past an unfinished
record (see offsets.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentstream.processors.workers.faust_config import (
    idempotence_granted,
    quiet_faust_logging,
    worker_app,
)
from agentstream.processors.workers.offsets import InOrderAcks
from agentstream.processors.workers.results import encodable
from agentstream.schemas.errors import SerializationError
from agentstream.schemas.events import Event
from agentstream.streams import dlq
from agentstream.streams.admission import Refused, check_placement
from agentstream.streams.runtime import metrics, tracing
from agentstream.streams.runtime.health import ASSIGNED, Readiness
from agentstream.streams.runtime.logs import bind_context, get_logger
from agentstream.streams.runtime.service import STOP_TIMEOUT_S, Service
from agentstream.streams.runtime.settings import Settings
from agentstream.streams.serde import DecodeError, EventSerde, registry_client
from agentstream.streams.topics import DLQ, TopicSpec, topic_for

__all__ = [
    "STARTUP_TIMEOUT_S",
    "FaustCallWorker",
    "Handler",
    "WorkerStats",
]

log = get_logger(__name__)

#: how long a worker may take to join its group and be assigned before it gives up and exits
STARTUP_TIMEOUT_S = 60.0

Handler = Callable[[Event], Awaitable[Event]]


@dataclass
class WorkerStats:
    consumed: int = 0
    results: int = 0
    dead_lettered: int = 0
    failed: bool = False


class FaustCallWorker(Service):
    """Consumes ``requests`` (records of ``request_type``) and sends what ``handle`` returns."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str,
        group_id: str,
        requests: TopicSpec,
        request_type: type[Event],
        handle: Handler,
        concurrency: int = 8,
        serde: EventSerde | None = None,
        instance_id: str | None = None,
        drain_timeout_s: float = 30.0,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.settings = settings
        self.name = name
        self.group_id = group_id
        self.request_type = request_type
        self.concurrency = concurrency
        self.serde = serde or EventSerde(registry_client(settings.require_schema_registry_url()))
        # Stateless: ready once it holds partitions (lag is not exported for workers yet). Its
        # stop waits for the calls in flight first.
        super().__init__(Readiness(ASSIGNED), stop_timeout_s=drain_timeout_s + STOP_TIMEOUT_S)
        self.stats = WorkerStats()
        self._handle = handle
        self._instance_id = instance_id
        self._drain_timeout_s = drain_timeout_s
        self._on_stop = on_stop
        self._requests_topic = settings.topic(requests.name)
        self._dlq_topic = settings.topic(DLQ.name)
        self._acks: InOrderAcks[Any] = InOrderAcks()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._draining = False
        self._app: Any = None
        self._idempotent = False
        self._ready = False
        self._slots: asyncio.Semaphore | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> WorkerStats:
        """Consume until ``stop()`` (or SIGTERM with ``install_signal_handlers``)."""
        quiet_faust_logging()
        asyncio.run(self._main())
        return self.stats

    def _wake(self) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(self.concurrency)
        if self.stop_requested:
            return
        self._idempotent = idempotent = await idempotence_granted(self.settings)
        app = self._app = worker_app(
            self.settings, self.group_id, instance_id=self._instance_id, idempotent=idempotent
        )
        topic = app.topic(
            self._requests_topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        app.agent(topic, name=f"{self.group_id}.requests")(self._consume)
        app.on_startup_finished = self._on_ready
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.finalize()
        starting = asyncio.ensure_future(app.start())
        started_at = time.monotonic()
        try:
            while not self._stopping.is_set():
                if app.crashed:
                    log.error(f"{self.name}_crashed", error=repr(app.crash_reason))
                    self.stats.failed = True
                    break
                if not self._ready and time.monotonic() - started_at > STARTUP_TIMEOUT_S:
                    # Seen when the broker went away while the worker started: aiokafka's
                    # bootstrap fails inside Faust's consumer thread and nothing retries it.
                    # Exiting non-zero lets the supervisor start a fresh process.
                    log.error(f"{self.name}_start_stalled", seconds=STARTUP_TIMEOUT_S)
                    self.stats.failed = True
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 0.5)
            await self._drain()
        finally:
            starting.cancel()
            await app.stop()  # commits what was acked
            if self._on_stop is not None:
                await self._on_stop()
            log.info(f"{self.name}_stopped", **vars(self.stats))

    async def _on_ready(self) -> None:
        self._ready = True
        log.info(
            "worker_started",
            worker=self.name,
            group=self.group_id,
            topic=self._requests_topic,
            concurrency=self.concurrency,
            idempotent_producer=self._idempotent,
            read_committed=self.settings.processor_transactions,
        )

    async def _on_revoked(self, _sender: Any, revoked: set[Any], **_kwargs: Any) -> None:
        self._acks.forget(revoked)

    async def _on_assigned(self, _sender: Any, assigned: set[Any], **_kwargs: Any) -> None:
        self.readiness.set(ASSIGNED, bool(assigned))

    async def _drain(self) -> None:
        """Stop taking records and give the running calls time to finish and be acked."""
        self._draining = True
        if self._tasks:
            log.info(f"{self.name}_draining", in_flight=len(self._tasks))
            _done, pending = await asyncio.wait(set(self._tasks), timeout=self._drain_timeout_s)
            for task in pending:
                task.cancel()

    def _fatal(self, exc: BaseException) -> None:
        # Without its result produced a record must not be acked; stopping hands it (and
        # everything after it) to the next incarnation or group member.
        self.stats.failed = True
        log.error(f"{self.name}_failed", error=repr(exc))
        if self._stopping is not None:
            self._stopping.set()

    # -- consuming -------------------------------------------------------------------------

    async def _consume(self, stream: Any) -> None:
        assert self._slots is not None
        async for event in stream.noack().events():
            if self._draining:
                continue  # left unacked: redelivered after the restart
            await self._slots.acquire()
            message = event.message
            self._acks.start(message.tp, message.offset, event)
            task = asyncio.create_task(self._process(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _process(self, event: Any) -> None:
        assert self._slots is not None
        message = event.message
        self.stats.consumed += 1
        try:
            try:
                # Inline: decoding takes tens of microseconds, and a hop through a thread pool
                # and back costs more (a quarter of the worker's profile samples). Only the first
                # record of a schema id waits for the registry; the serde caches it.
                request = self._decode(message)
            except Refused as rejected:
                await self._dead_letter(message, rejected)
            else:
                # The request's trace continues in its result; log lines of this call carry it.
                parent = tracing.traceparent_of(message.headers) or tracing.derived_traceparent(
                    request.envelope.correlation_id
                )
                bind_context(trace_id=tracing.trace_id_of(parent))
                metrics.EVENTS_CONSUMED.labels(
                    self.name, message.topic, type(request).__name__
                ).inc()
                result = await self._handle(request)
                await self._send(result, tracing.child_span(type(result).__name__, parent))
                self.stats.results += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fatal(exc)
            return
        finally:
            self._slots.release()
        for ready in self._acks.finish(message.tp, message.offset):
            ready.ack()

    def _decode(self, message: Any) -> Event:
        try:
            record = self.serde.decode(message.topic, message.value)
        except DecodeError as exc:
            raise Refused(exc.error_class, str(exc)) from exc
        check_placement(record, message.topic, (self.request_type,), message.key)
        assert isinstance(record, Event)
        return record

    async def _send(self, result: Event, traceparent: bytes) -> None:
        topic = self.settings.topic(topic_for(type(result)).name)
        try:
            value = self.serde.encode(topic, result)
        except SerializationError:
            value = self.serde.encode(topic, encodable(result))
        await self._app.producer.send_and_wait(
            topic,
            result.envelope.agent_id.encode(),
            value,
            None,
            None,
            [(tracing.TRACEPARENT, traceparent)],
        )
        metrics.EVENTS_PRODUCED.labels(self.name, topic, type(result).__name__).inc()

    async def _dead_letter(self, message: Any, rejected: Refused) -> None:
        headers = [(k, v if isinstance(v, bytes) else str(v).encode()) for k, v in message.headers]
        letter = dlq.letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=headers,
            reason=str(rejected),
            error_class=rejected.error_class,
            source=self.name,
            event=rejected.event,
        )
        log.warning(
            "dead_letter",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            error_class=rejected.error_class,
            reason=str(rejected),
        )
        value = self.serde.encode(self._dlq_topic, letter)
        await self._app.producer.send_and_wait(
            self._dlq_topic, message.key, value, None, None, dlq.headers_for(letter)
        )
        self.stats.dead_lettered += 1
