"""The operator console and the HTTP ingress: one Starlette app over the read models.

Pages: pending approvals with approve/deny buttons, runs by status with a cancel button on the
running ones, an agent's timeline with pause/resume buttons and the conversations of its runs
(of one run, with ``?run_id=``) as trees of runs across agents. API:
``POST /api/approvals/{call_id}`` (a decision, through the approvals client, which checks the
call is pending and the hash is its arguments') and ``POST /api/inputs`` (an AgentInput for
upstream systems that do not speak Kafka, answered once the broker acknowledged it); and the
steering commands, each an event on agent.control built by the steering SDK, answered 202 once
the broker acknowledged it: ``POST /api/runs/{run_id}/cancel``,
``POST /api/agents/{agent_id}/pause`` and ``/resume``, ``POST /api/agents/{agent_id}/memory``
(a fact), ``DELETE /api/agents/{agent_id}/memory[/{key}]`` (erase one fact, or everything) and
``POST /api/callbacks/{callback_id}`` (a waiting tool call's result). Their bodies take an
optional ``tenant_id``; pause, resume and erase may have no body at all.

Every route but ``/healthz`` needs a credential from the settings: ``Authorization: Bearer
<AGENTSTREAM_CONSOLE_TOKEN>`` or basic credentials (``AGENTSTREAM_CONSOLE_USERNAME`` /
``_PASSWORD``). Decisions and steering commands carry the signed-in operator: the basic user
name, or ``token`` for the bearer token. Without any credential configured the app serves only
a loopback address (:func:`check_exposure`), and the operator is ``local``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from agentstream.processors.control import steering
from agentstream.processors.control.approvals import ApprovalsClient
from agentstream.projections import queries
from agentstream.projections.database import DEFAULT_SCHEMA, connect
from agentstream.projections.inspect import conversation_trees
from agentstream.schemas.errors import AgentStreamError, ConfigurationError
from agentstream.schemas.events import CallbackCompleted, MemoryRecorded
from agentstream.streams.producer import AgentStreamProducer, new_input
from agentstream.streams.runtime import metrics, tracing
from agentstream.streams.runtime.settings import Settings
from agentstream.tools.console import pages

Handler = Callable[[Request, str], Awaitable[Response]]
LOCAL_APPROVER = "local"
#: how many of an agent's conversations its page shows, the latest
CONVERSATIONS_SHOWN = 20
TOKEN_APPROVER = "token"
#: what the steering endpoints put in the events' envelopes
INGRESS_SOURCE = "http-ingress"


class IngressInput(BaseModel):
    """What ``POST /api/inputs`` takes; it becomes an AgentInput (validated once more there)."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(min_length=1)
    text: str
    tenant_id: str = "default"
    metadata: dict[str, str] = Field(default_factory=dict)
    #: the agent kind to serve a new agent (None: the processor's default kind)
    kind: str | None = None


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    arguments_hash: str = Field(min_length=8)
    comment: str | None = None


class SteeringBody(BaseModel):
    """What every steering endpoint takes; the agent's tenant, ``default`` unless named."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str = "default"


class CancelBody(SteeringBody):
    agent_id: str = Field(min_length=1)
    reason: str = ""


class PauseBody(SteeringBody):
    reason: str = ""


class RememberBody(SteeringBody):
    key: str
    value: str


class EraseBody(SteeringBody):
    reason: str = ""


class CallbackBody(SteeringBody):
    agent_id: str = Field(min_length=1)
    #: any JSON value, the tool's result; serialized into the event
    result: JsonValue


BodyT = TypeVar("BodyT", bound=SteeringBody)


def has_credentials(settings: Settings) -> bool:
    return settings.console_token is not None or (
        settings.console_username is not None and settings.console_password is not None
    )


def check_exposure(host: str, settings: Settings) -> None:
    """Refuse to serve a non-loopback address without a credential."""
    if has_credentials(settings) or _is_loopback(host):
        return
    raise ConfigurationError(
        f"the console would serve {host} without authentication",
        hint="set AGENTSTREAM_CONSOLE_TOKEN (or AGENTSTREAM_CONSOLE_USERNAME and "
        "AGENTSTREAM_CONSOLE_PASSWORD), or bind --host 127.0.0.1",
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Console:
    """The app's state: settings, one producer (thread-safe), the read-model schema."""

    def __init__(
        self,
        settings: Settings,
        *,
        schema: str = DEFAULT_SCHEMA,
        producer: AgentStreamProducer | None = None,
    ) -> None:
        self.settings = settings
        self.schema = schema
        self._producer = producer
        self._owns_producer = producer is None

    @property
    def producer(self) -> AgentStreamProducer:
        if self._producer is None:
            self._producer = AgentStreamProducer(self.settings)
        return self._producer

    def close(self) -> None:
        if self._owns_producer and self._producer is not None:
            self._producer.close()
            self._producer = None

    # -- authentication ------------------------------------------------------------------------

    def user_of(self, request: Request) -> str | None:
        """The signed-in identity, or None when the request has no valid credential."""
        s = self.settings
        if not has_credentials(s):
            return LOCAL_APPROVER
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and s.console_token is not None:
            if _same(value.strip(), s.console_token.get_secret_value()):
                return TOKEN_APPROVER
        elif scheme == "basic" and s.console_username and s.console_password:
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            if _same(user, s.console_username) & _same(
                password, s.console_password.get_secret_value()
            ):
                return user
        return None

    def guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            user = self.user_of(request)
            if user is None:
                challenge = (
                    'Basic realm="agentstream"' if self.settings.console_username else ("Bearer")
                )
                return JSONResponse(
                    {"error": "authentication required"},
                    status_code=401,
                    headers={"WWW-Authenticate": challenge},
                )
            return await handler(request, user)

        return endpoint

    # -- pages -----------------------------------------------------------------------------

    def _read(self, fn: Callable[[queries.Connection], Any]) -> Any:
        with connect(self.settings.require_database_url(), self.schema) as conn:
            return fn(conn)

    async def approvals(self, _request: Request, user: str) -> Response:
        pending = await run_in_threadpool(self._read, queries.pending_approvals)
        return HTMLResponse(pages.page("Pending approvals", pages.approvals_body(pending), user))

    async def runs(self, request: Request, user: str) -> Response:
        wanted = request.query_params.get("status") or None
        if wanted is not None and wanted not in pages.RUN_STATUSES:
            known = ", ".join(pages.RUN_STATUSES)
            return JSONResponse({"error": f"status must be one of {known}"}, 400)
        statuses = [s for s in pages.RUN_STATUSES if wanted in (None, s)]

        def load(conn: queries.Connection) -> list[queries.RunRow]:
            rows = [r for s in statuses for r in queries.runs_by_status(conn, s)]
            return sorted(rows, key=lambda r: r.started_at, reverse=True)

        rows = await run_in_threadpool(self._read, load)
        return HTMLResponse(pages.page("Runs", pages.runs_body(rows, wanted), user))

    async def timeline(self, request: Request, user: str) -> Response:
        agent_id = request.path_params["agent_id"]
        run_id = request.query_params.get("run_id") or None
        entries, agent, running, facts, trees = await run_in_threadpool(
            self._read,
            lambda conn: (
                queries.agent_timeline(conn, agent_id, run_id=run_id),
                queries.get_agent(conn, agent_id),
                queries.runs_by_status(conn, queries.RunStatus.RUNNING, agent_id=agent_id),
                queries.agent_facts(conn, agent_id),
                conversation_trees(conn, agent_id, run_id),
            ),
        )
        if run_id is not None:
            running = [r for r in running if r.run_id == run_id]
        title = f"Timeline of {agent_id}" + (f" · run {run_id}" if run_id else "")
        tenant_id = agent.tenant_id if agent is not None else "default"
        controls = pages.agent_controls(agent_id, tenant_id, running)
        summary = pages.agent_summary(agent, facts)
        conversations = pages.conversations_body(trees, CONVERSATIONS_SHOWN)
        body = summary + controls + conversations + pages.timeline_body(entries)
        return HTMLResponse(pages.page(title, body, user))

    # -- API -------------------------------------------------------------------------------

    async def decide(self, request: Request, user: str) -> Response:
        body = await _json_body(request, 16 * 1024)
        if isinstance(body, Response):
            return body
        try:
            decision = DecisionBody.model_validate(body)
        except ValidationError as exc:
            return _invalid(exc)
        call_id = request.path_params["call_id"]
        client = ApprovalsClient(self.settings, self.producer)
        try:
            event = await run_in_threadpool(
                lambda: client.decide(
                    call_id,
                    approve=decision.approve,
                    approver=user,
                    arguments_hash=decision.arguments_hash,
                    comment=decision.comment,
                )
            )
        except AgentStreamError as exc:
            return JSONResponse({"error": str(exc), "hint": exc.hint}, status_code=409)
        return JSONResponse(
            {
                "event_id": event.envelope.event_id,
                "decision": type(event).__name__,
                "approver": user,
            }
        )

    async def ingest(self, request: Request, _user: str) -> Response:
        response = await self._ingest(request)
        metrics.INGRESS_REQUESTS.labels(str(response.status_code)).inc()
        return response

    async def _ingest(self, request: Request) -> Response:
        body = await _json_body(request, self.settings.ingress_max_bytes)
        if isinstance(body, Response):
            return body
        try:
            given = IngressInput.model_validate(body)
            event = new_input(
                given.agent_id,
                given.text,
                tenant_id=given.tenant_id,
                metadata=given.metadata,
                source="http-ingress",
                kind=given.kind,
            )
        except ValidationError as exc:
            return _invalid(exc)
        parent = tracing.parse(request.headers.get(tracing.TRACEPARENT)) or (
            tracing.derived_traceparent(event.envelope.correlation_id)
        )
        traceparent = tracing.child_span("ingress", parent)
        try:
            delivery = await run_in_threadpool(
                lambda: self.producer.send(event, headers=[(tracing.TRACEPARENT, traceparent)])
            )
        except AgentStreamError as exc:
            return JSONResponse({"error": str(exc), "hint": exc.hint}, status_code=503)
        return JSONResponse(
            {
                "event_id": event.envelope.event_id,
                "agent_id": event.envelope.agent_id,
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
                "trace_id": tracing.trace_id_of(traceparent),
            },
            status_code=202,
        )

    # -- steering --------------------------------------------------------------------------

    async def cancel_run(self, request: Request, user: str) -> Response:
        run_id = request.path_params["run_id"]
        return await self._steer(
            request,
            CancelBody,
            lambda b: steering.cancel_run(
                b.agent_id,
                run_id,
                requested_by=user,
                reason=b.reason,
                tenant_id=b.tenant_id,
                source=INGRESS_SOURCE,
            ),
        )

    async def pause(self, request: Request, user: str) -> Response:
        agent_id = request.path_params["agent_id"]
        return await self._steer(
            request,
            PauseBody,
            lambda b: steering.pause_agent(
                agent_id,
                requested_by=user,
                reason=b.reason,
                tenant_id=b.tenant_id,
                source=INGRESS_SOURCE,
            ),
            optional=True,
        )

    async def resume(self, request: Request, user: str) -> Response:
        agent_id = request.path_params["agent_id"]
        return await self._steer(
            request,
            SteeringBody,
            lambda b: steering.resume_agent(
                agent_id, requested_by=user, tenant_id=b.tenant_id, source=INGRESS_SOURCE
            ),
            optional=True,
        )

    async def remember(self, request: Request, user: str) -> Response:
        agent_id = request.path_params["agent_id"]
        return await self._steer(
            request,
            RememberBody,
            lambda b: steering.record_memory(
                agent_id,
                b.key,
                b.value,
                recorded_by=user,
                tenant_id=b.tenant_id,
                source=INGRESS_SOURCE,
            ),
        )

    async def erase(self, request: Request, user: str) -> Response:
        """``DELETE .../memory/{key}`` erases one fact; ``DELETE .../memory``, everything."""
        agent_id = request.path_params["agent_id"]
        key = request.path_params.get("key")
        return await self._steer(
            request,
            EraseBody,
            lambda b: steering.erase_memory(
                agent_id,
                key,
                requested_by=user,
                reason=b.reason,
                tenant_id=b.tenant_id,
                source=INGRESS_SOURCE,
            ),
            optional=True,
        )

    async def complete_callback(self, request: Request, user: str) -> Response:
        callback_id = request.path_params["callback_id"]

        def build(body: CallbackBody) -> steering.SteeringEvent:
            return steering.complete_callback(
                body.agent_id,
                callback_id,
                _result_json(body.result),
                completed_by=user,
                tenant_id=body.tenant_id,
                source=INGRESS_SOURCE,
            )

        return await self._steer(request, CallbackBody, build)

    async def _steer(
        self,
        request: Request,
        body_type: type[BodyT],
        build: Callable[[BodyT], steering.SteeringEvent],
        *,
        optional: bool = False,
    ) -> Response:
        response = await self._steer_once(request, body_type, build, optional)
        metrics.INGRESS_REQUESTS.labels(str(response.status_code)).inc()
        return response

    async def _steer_once(
        self,
        request: Request,
        body_type: type[BodyT],
        build: Callable[[BodyT], steering.SteeringEvent],
        optional: bool,
    ) -> Response:
        """Parse and check the body, build the event, send it, and answer once the broker has
        it; a refused request sends nothing."""
        if optional and _has_no_body(request):
            body: Any = {}
        else:
            body = await _json_body(request, self.settings.ingress_max_bytes)
            if isinstance(body, Response):
                return body
        try:
            given = body_type.model_validate(body)
        except ValidationError as exc:
            return _invalid(exc, body_type.__name__.removesuffix("Body") + " request")
        try:
            event = build(given)
        except ValidationError as exc:
            return _invalid(exc, "", _EVENT_FIELDS)
        except steering.SteeringError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)
        try:
            delivery = await run_in_threadpool(self.producer.send, event)
        except AgentStreamError as exc:
            return JSONResponse({"error": str(exc), "hint": exc.hint}, status_code=503)
        return JSONResponse(
            {
                "event_id": event.envelope.event_id,
                "type": type(event).__name__,
                "agent_id": event.envelope.agent_id,
                "requested_by": _requester(event),
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
            },
            status_code=202,
        )


#: event fields named as the request gives them, for the answer to an invalid request
_EVENT_FIELDS = {"result_json": "result"}


def _requester(event: steering.SteeringEvent) -> str:
    if isinstance(event, MemoryRecorded):
        return event.recorded_by
    if isinstance(event, CallbackCompleted):
        return event.completed_by
    return event.requested_by


def _result_json(result: JsonValue) -> str:
    """A callback's result as the event carries it, JSON text (the event checks its size)."""
    try:
        return json.dumps(result, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:  # NaN or Infinity: Python parsed them, JSON has no such values
        raise steering.SteeringError(f"the result is not JSON: {exc}") from exc


def _has_no_body(request: Request) -> bool:
    return (
        request.headers.get("content-length", "0") == "0"
        and "transfer-encoding" not in request.headers
    )


async def _json_body(request: Request, limit: int) -> Any:
    """The parsed JSON body, or the 4xx answer: 415 not JSON, 413 too large, 400 unparsable."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return JSONResponse({"error": "send Content-Type: application/json"}, status_code=415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return _too_large(limit)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        return JSONResponse({"error": f"body is not JSON: {exc}"}, status_code=400)


def _too_large(limit: int) -> Response:
    return JSONResponse(
        {"error": f"body larger than {limit} bytes (AGENTSTREAM_INGRESS_MAX_BYTES)"},
        status_code=413,
    )


def _invalid(
    exc: ValidationError, schema: str = "AgentInput", rename: Mapping[str, str] | None = None
) -> Response:
    """422 naming each problem's field; ``schema`` empty for a request that is well formed but
    whose values the event refuses (an id with a space, a result too large)."""
    problems = [
        {"field": _field(e["loc"], rename or {}), "problem": e["msg"]} for e in exc.errors()
    ]
    error = f"the body does not match the {schema} schema" if schema else "invalid values"
    return JSONResponse({"error": error, "problems": problems}, status_code=422)


def _field(loc: tuple[int | str, ...], rename: Mapping[str, str]) -> str:
    if rename and loc:
        return rename.get(str(loc[-1]), str(loc[-1]))
    return ".".join(str(p) for p in loc)


def _same(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


def create_console_app(console: Console) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(console.close)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"service": "console", "alive": True})

    async def home(_request: Request, _user: str) -> Response:
        return RedirectResponse("/approvals")

    guard = console.guarded
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/", guard(home)),
            Route("/approvals", guard(console.approvals)),
            Route("/runs", guard(console.runs)),
            # an agent another agent's run delegated to or handed off to has a slash in its id
            Route("/agents/{agent_id:path}/timeline", guard(console.timeline)),
            Route("/api/approvals/{call_id}", guard(console.decide), methods=["POST"]),
            Route("/api/inputs", guard(console.ingest), methods=["POST"]),
            Route("/api/runs/{run_id}/cancel", guard(console.cancel_run), methods=["POST"]),
            Route("/api/agents/{agent_id:path}/pause", guard(console.pause), methods=["POST"]),
            Route("/api/agents/{agent_id:path}/resume", guard(console.resume), methods=["POST"]),
            Route("/api/agents/{agent_id:path}/memory", guard(console.remember), methods=["POST"]),
            Route("/api/agents/{agent_id:path}/memory", guard(console.erase), methods=["DELETE"]),
            # a fact's key is free text: it may hold a slash (the agent id ends at the last
            # "/memory/", so a key holding that is read as part of the agent's id)
            Route(
                "/api/agents/{agent_id:path}/memory/{key:path}",
                guard(console.erase),
                methods=["DELETE"],
            ),
            Route(
                "/api/callbacks/{callback_id}", guard(console.complete_callback), methods=["POST"]
            ),
        ],
        lifespan=lifespan,
    )
