"""The schema registry's HTTP API: the part of Confluent's REST API that confluent-kafka's
``SchemaRegistryClient`` and its Avro serializers use, as an ASGI app over :mod:`registry_store`.

Errors use Confluent's body, ``{"error_code": ..., "message": ...}``, because the clients turn
exactly those two fields into ``SchemaRegistryError``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from agentstream.streams.runtime.logs import get_logger
from agentstream.tools.devstack.registry.compat import (
    AVRO,
    BadRequestError,
    CompatibilityLevel,
    InvalidCompatibilityLevelError,
    InvalidSchemaError,
    InvalidVersionError,
    OperationNotPermittedError,
    ParsedSchema,
    RegistryError,
    parse_schema,
)
from agentstream.tools.devstack.registry.store import LATEST, Pool, RegistryStore

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_MAX_VERSION = 2**31 - 1

log = get_logger("agentstream.registry")

Handler = Callable[[Request], Awaitable[Response]]


class RegistryResponse(JSONResponse):
    media_type = CONTENT_TYPE


def _error(status: int, code: int, message: str) -> Response:
    return RegistryResponse({"error_code": code, "message": message}, status_code=status)


# -- request parsing -------------------------------------------------------------------------


def _store(request: Request) -> RegistryStore:
    store: RegistryStore = request.app.state.store
    return store


def _flag(request: Request, name: str) -> bool:
    # The Python client sends str(bool) ("True"), httpx sends "true"; accept both.
    return request.query_params.get(name, "false").lower() == "true"


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequestError(f"query parameter {name} must be an integer, got {raw!r}") from None


def _page(request: Request, items: list[Any]) -> list[Any]:
    offset = max(_int_param(request, "offset", 0), 0)
    limit = _int_param(request, "limit", -1)
    return items[offset:] if limit < 0 else items[offset : offset + limit]


def _version(request: Request) -> int:
    raw = request.path_params["version"]
    if raw == "latest":
        return LATEST
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if number == LATEST or 1 <= number <= _MAX_VERSION:
        return number
    raise InvalidVersionError(
        f"The specified version '{raw}' is not a valid version id. Allowed values are between"
        ' [1, 2^31-1] and the string "latest"'
    )


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequestError(f"Unexpected character in the JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    return body


def _schema_of(body: dict[str, Any]) -> ParsedSchema:
    if body.get("references"):
        raise InvalidSchemaError("Schema references are not supported by this registry")
    if body.get("metadata") or body.get("ruleSet"):
        raise InvalidSchemaError("Schema metadata and rule sets are not supported by this registry")
    schema = body.get("schema")
    if schema is not None and not isinstance(schema, str):
        raise BadRequestError("'schema' must be a string that holds the schema's JSON")
    return parse_schema(schema, body.get("schemaType", AVRO))


# -- schemas ---------------------------------------------------------------------------------


async def root(_request: Request) -> Response:
    return RegistryResponse({})


async def schema_types(_request: Request) -> Response:
    return RegistryResponse([AVRO])


async def get_schema(request: Request) -> Response:
    schema = await _store(request).schema_by_id(request.path_params["schema_id"])
    return RegistryResponse(schema.to_json())


async def get_schema_text(request: Request) -> Response:
    schema = await _store(request).schema_by_id(request.path_params["schema_id"])
    return PlainTextResponse(schema.text, media_type=CONTENT_TYPE)


async def get_schema_by_guid(request: Request) -> Response:
    schema = await _store(request).schema_by_guid(request.path_params["guid"])
    return RegistryResponse({"id": schema.id, **schema.to_json()})


async def get_schema_subjects(request: Request) -> Response:
    usages = await _store(request).usages(
        request.path_params["schema_id"], deleted=_flag(request, "deleted")
    )
    subjects = sorted({subject for subject, _ in usages})
    return RegistryResponse(_page(request, subjects))


async def get_schema_versions(request: Request) -> Response:
    usages = await _store(request).usages(
        request.path_params["schema_id"], deleted=_flag(request, "deleted")
    )
    pairs = [{"subject": subject, "version": version} for subject, version in usages]
    return RegistryResponse(_page(request, pairs))


# -- subjects --------------------------------------------------------------------------------


async def list_subjects(request: Request) -> Response:
    subjects = await _store(request).subjects(
        prefix=request.query_params.get("subjectPrefix", ""),
        deleted=_flag(request, "deleted"),
        deleted_only=_flag(request, "deleted_only"),
    )
    return RegistryResponse(_page(request, subjects))


async def lookup_schema(request: Request) -> Response:
    schema = _schema_of(await _body(request))
    found = await _store(request).lookup(
        request.path_params["subject"], schema, deleted=_flag(request, "deleted")
    )
    return RegistryResponse(found.to_json())


async def delete_subject(request: Request) -> Response:
    versions = await _store(request).delete_subject(
        request.path_params["subject"], permanent=_flag(request, "permanent")
    )
    return RegistryResponse(versions)


async def list_versions(request: Request) -> Response:
    versions = await _store(request).versions(
        request.path_params["subject"],
        deleted=_flag(request, "deleted"),
        deleted_only=_flag(request, "deleted_only"),
    )
    return RegistryResponse(_page(request, versions))


async def register(request: Request) -> Response:
    body = await _body(request)
    schema = _schema_of(body)
    # Choosing ids or versions is Confluent's IMPORT mode, which this registry does not offer.
    if body.get("id") is not None or body.get("version") is not None:
        raise OperationNotPermittedError(
            "Registering with an explicit id or version needs IMPORT mode, which this registry"
            " does not support"
        )
    registered = await _store(request).register(request.path_params["subject"], schema)
    # No "schema" in the answer: the client then caches the schema object it sent.
    return RegistryResponse(
        {
            "id": registered.schema.id,
            "guid": registered.schema.guid,
            "subject": registered.subject,
            "version": registered.version,
        }
    )


async def get_version(request: Request) -> Response:
    found = await _store(request).version(
        request.path_params["subject"], _version(request), deleted=_flag(request, "deleted")
    )
    return RegistryResponse(found.to_json())


async def get_version_schema(request: Request) -> Response:
    found = await _store(request).version(
        request.path_params["subject"], _version(request), deleted=_flag(request, "deleted")
    )
    return PlainTextResponse(found.schema.text, media_type=CONTENT_TYPE)


async def get_referenced_by(request: Request) -> Response:
    # Nothing can reference a version here (references are refused), but the version must exist.
    await _store(request).version(request.path_params["subject"], _version(request), deleted=True)
    return RegistryResponse([])


async def delete_version(request: Request) -> Response:
    version = await _store(request).delete_version(
        request.path_params["subject"], _version(request), permanent=_flag(request, "permanent")
    )
    return RegistryResponse(version)


# -- compatibility ---------------------------------------------------------------------------


def _subject_param(request: Request) -> str | None:
    subject: str | None = request.path_params.get("subject")
    return subject


async def get_config(request: Request) -> Response:
    level = await _store(request).compatibility(
        _subject_param(request), fallback=_flag(request, "defaultToGlobal")
    )
    return RegistryResponse({"compatibilityLevel": level.value})


async def put_config(request: Request) -> Response:
    body = await _body(request)
    raw = body.get("compatibility", body.get("compatibilityLevel"))
    if raw is None:
        raise InvalidCompatibilityLevelError("Invalid compatibility level: none given")
    level = CompatibilityLevel.parse(raw)
    await _store(request).set_compatibility(_subject_param(request), level)
    return RegistryResponse({"compatibility": level.value})


async def delete_config(request: Request) -> Response:
    previous = await _store(request).delete_compatibility(_subject_param(request))
    return RegistryResponse({"compatibilityLevel": previous.value})


async def get_mode(_request: Request) -> Response:
    return RegistryResponse({"mode": "READWRITE"})


async def check_version(request: Request) -> Response:
    schema = _schema_of(await _body(request))
    problems = await _store(request).check(
        request.path_params["subject"], schema, _version(request)
    )
    return _compatibility_answer(request, problems)


async def check_all_versions(request: Request) -> Response:
    schema = _schema_of(await _body(request))
    problems = await _store(request).check(request.path_params["subject"], schema, None)
    return _compatibility_answer(request, problems)


def _compatibility_answer(request: Request, problems: list[str]) -> Response:
    answer: dict[str, Any] = {"is_compatible": not problems}
    if _flag(request, "verbose"):
        answer["messages"] = problems
    return RegistryResponse(answer)


# -- the app ---------------------------------------------------------------------------------


async def _registry_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return _error(exc.http_status, exc.error_code, str(exc))


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.status_code, f"HTTP {exc.status_code} {exc.detail}")


async def _database_error(request: Request, exc: Exception) -> Response:
    log.error("registry storage failed", path=request.url.path, error=str(exc))
    return _error(500, 50001, "Error in the backend data store")


_SUBJECT = "/subjects/{subject}"
_VERSION = _SUBJECT + "/versions/{version}"

ROUTES = [
    Route("/", root, methods=["GET"]),
    Route("/mode", get_mode, methods=["GET"]),
    Route("/schemas/types", schema_types, methods=["GET"]),
    Route("/schemas/ids/{schema_id:int}", get_schema, methods=["GET"]),
    Route("/schemas/ids/{schema_id:int}/schema", get_schema_text, methods=["GET"]),
    Route("/schemas/ids/{schema_id:int}/subjects", get_schema_subjects, methods=["GET"]),
    Route("/schemas/ids/{schema_id:int}/versions", get_schema_versions, methods=["GET"]),
    Route("/schemas/guids/{guid}", get_schema_by_guid, methods=["GET"]),
    Route("/subjects", list_subjects, methods=["GET"]),
    Route(_SUBJECT, lookup_schema, methods=["POST"]),
    Route(_SUBJECT, delete_subject, methods=["DELETE"]),
    Route(_SUBJECT + "/versions", list_versions, methods=["GET"]),
    Route(_SUBJECT + "/versions", register, methods=["POST"]),
    Route(_VERSION, get_version, methods=["GET"]),
    Route(_VERSION, delete_version, methods=["DELETE"]),
    Route(_VERSION + "/schema", get_version_schema, methods=["GET"]),
    Route(_VERSION + "/referencedby", get_referenced_by, methods=["GET"]),
    Route("/config", get_config, methods=["GET"]),
    Route("/config", put_config, methods=["PUT"]),
    Route("/config", delete_config, methods=["DELETE"]),
    Route("/config/{subject}", get_config, methods=["GET"]),
    Route("/config/{subject}", put_config, methods=["PUT"]),
    Route("/config/{subject}", delete_config, methods=["DELETE"]),
    Route("/compatibility" + _VERSION, check_version, methods=["POST"]),
    Route("/compatibility" + _SUBJECT + "/versions", check_all_versions, methods=["POST"]),
]


def create_app(database_url: str, *, pool_size: int = 10) -> Starlette:
    """The registry over ``database_url``; its tables are created when the app starts."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool: Pool = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            open=False,
        )
        await pool.open(wait=True, timeout=15)
        try:
            store = RegistryStore(pool)
            await store.create_tables()
            app.state.store = store
            yield
        finally:
            await pool.close()

    return Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            RegistryError: _registry_error,
            HTTPException: _http_error,
            psycopg.Error: _database_error,
        },
    )
