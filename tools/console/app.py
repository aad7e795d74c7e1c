"""The operator console and the HTTP ingress: one Starlette app over the read models.

Pages: pending approvals with approve/deny buttons, runs by status, an agent's timeline. API:
``POST /api/approvals/{call_id}`` (a decision, through the approvals client, which checks the
call is pending and the hash is its arguments') and ``POST /api/inputs`` (an AgentInput for
upstream systems that do not speak Kafka, answered once the broker acknowledged it).

Every route but ``/healthz`` needs a credential from the settings: ``Authorization: Bearer
<AGENTSTREAM_CONSOLE_TOKEN>`` or basic credentials (``AGENTSTREAM_CONSOLE_USERNAME`` /
``_PASSWORD``). Decisions carry the signed-in approver: the basic user name, or ``token`` for
the bearer token. Without any credential configured the app serves only a loopback address
(:func:`check_exposure`), and the approver is ``local``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from agentstream.processors.control.approvals import ApprovalsClient
from agentstream.projections import queries
from agentstream.projections.database import DEFAULT_SCHEMA, connect
from agentstream.schemas.errors import AgentStreamError, ConfigurationError
from agentstream.streams.producer import AgentStreamProducer, new_input
from agentstream.streams.runtime import metrics, tracing
from agentstream.streams.runtime.settings import Settings
from agentstream.tools.console import pages

Handler = Callable[[Request, str], Awaitable[Response]]
LOCAL_APPROVER = "local"
TOKEN_APPROVER = "token"


class IngressInput(BaseModel):
    """What ``POST /api/inputs`` takes; it becomes an AgentInput (validated once more there)."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(min_length=1)
    text: str
    tenant_id: str = "default"
    metadata: dict[str, str] = Field(default_factory=dict)


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approve: bool
    arguments_hash: str = Field(min_length=8)
    comment: str | None = None


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
            return JSONResponse({"error": f"status must be one of {pages.RUN_STATUSES}"}, 400)
        statuses = [s for s in pages.RUN_STATUSES if wanted in (None, s)]

        def load(conn: queries.Connection) -> list[queries.RunRow]:
            rows = [r for s in statuses for r in queries.runs_by_status(conn, s)]
            return sorted(rows, key=lambda r: r.started_at, reverse=True)

        rows = await run_in_threadpool(self._read, load)
        return HTMLResponse(pages.page("Runs", pages.runs_body(rows, wanted), user))

    async def timeline(self, request: Request, user: str) -> Response:
        agent_id = request.path_params["agent_id"]
        run_id = request.query_params.get("run_id") or None
        entries = await run_in_threadpool(
            self._read, lambda conn: queries.agent_timeline(conn, agent_id)
        )
        if run_id is not None:
            entries = _of_run(entries, run_id)
        title = f"Timeline of {agent_id}" + (f" · run {run_id}" if run_id else "")
        return HTMLResponse(pages.page(title, pages.timeline_body(entries), user))

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


def _of_run(entries: list[queries.TimelineEntry], run_id: str) -> list[queries.TimelineEntry]:
    """A run's events and the input that started it (an input belongs to no run yet; the run's
    events name it as their correlation id)."""
    correlation = {
        e.payload.get("envelope", {}).get("correlation_id")
        for e in entries
        if e.run_id == run_id and isinstance(e.payload.get("envelope"), dict)
    }
    return [e for e in entries if e.run_id == run_id or e.event_id in correlation]


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


def _invalid(exc: ValidationError) -> Response:
    problems = [
        {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()
    ]
    return JSONResponse(
        {"error": "the body does not match the AgentInput schema", "problems": problems},
        status_code=422,
    )


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
            Route("/agents/{agent_id}/timeline", guard(console.timeline)),
            Route("/api/approvals/{call_id}", guard(console.decide), methods=["POST"]),
            Route("/api/inputs", guard(console.ingest), methods=["POST"]),
        ],
        lifespan=lifespan,
    )
