"""What every service's HTTP app has: request ids, JSON errors naming the field, health, readiness, metrics."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth.deps import BearerFirstMiddleware, current_principal, database_unreachable
from shared.db import DatabaseUnavailable, database_unavailable
from shared.security_headers import SecurityHeadersMiddleware
from shared.validation import check_datetime_window, forbidden_character

log = structlog.get_logger(__name__)

# How long /readyz waits for the database before it says "not ready".
READYZ_TIMEOUT_S = 2.0
HTTP_REQUESTS = Counter("shouhu_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
HTTP_SECONDS = Histogram("shouhu_http_request_seconds", "HTTP request time", ["service", "route"])


class RequestContextMiddleware:
    """Bind a request id (taken from X-Request-ID or made up) to every log line; count and time requests.

    A plain ASGI middleware: Starlette's BaseHTTPMiddleware costs a task per request.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                request_id = value.decode("latin-1")[:64]
                break
        request_id = request_id or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status_code = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            route_path = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            HTTP_REQUESTS.labels(self.service, scope["method"], route_path, str(status_code)).inc()
            HTTP_SECONDS.labels(self.service, route_path).observe(elapsed)
            structlog.contextvars.unbind_contextvars("request_id")


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    # ("body", "warnings", 3, "phone") -> "warnings[3].phone"; drop the transport part.
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def pydantic_errors(errors: Any) -> list[dict[str, str]]:
    """pydantic's (or FastAPI's) error list as this API's field errors: the field's path and the reason."""
    out = []
    for err in errors:
        reason = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"field": _field_name(err.get("loc", ())), "reason": reason})
    return out


def validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    return pydantic_errors(exc.errors())


class FieldErrors(Exception):
    """Raise from a route for a 422 in the same shape as request validation errors."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['reason']}" for e in errors))
        self.errors = errors

    @classmethod
    def one(cls, field: str, reason: str) -> FieldErrors:
        return cls([{"field": field, "reason": reason}])


# ---- the one error model of all three services ----------------------------------------------------------

class FieldError(BaseModel):
    """One refused input: which field (a path such as `warnings[3].phone`, or `body`) and why."""

    field: str = Field(examples=["callback_at"])
    reason: str = Field(examples=["needs a time zone offset, e.g. 2026-11-21T15:00:00+08:00"])


class ErrorBody(BaseModel):
    """Every error answer except 422: what went wrong, in a sentence."""

    detail: str = Field(examples=["no task with this id in your unit"])


class ValidationErrorBody(BaseModel):
    """422: the input was refused; `errors` names each field and the reason, `detail` sums them up."""

    detail: str = Field(examples=["callback_at: needs a time zone offset, e.g. 2026-11-21T15:00:00+08:00"])
    errors: list[FieldError] = Field(min_length=1)


def _unprocessable(errors: list[dict[str, str]]) -> JSONResponse:
    errors = errors or [{"field": "body", "reason": "invalid"}]
    summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
    return JSONResponse(status_code=422, content={"detail": summary, "errors": errors})


_FIELD_RE = re.compile(r"^([A-Za-z_][\w.\[\]-]*): (.+)$", re.DOTALL)


def _errors_from_detail(detail: str) -> list[dict[str, str]]:
    """An HTTPException(422, "field: reason") in the field-error shape (every 422 has the one model)."""
    match = _FIELD_RE.match(detail)
    return [{"field": match.group(1), "reason": match.group(2)}] if match else [{"field": "body", "reason": detail}]


# ---- times and text an API client sends (the rules are shared/validation.py's, as the ingest path's) ---------

AwareTime = Annotated[datetime, AfterValidator(check_datetime_window),
                      Field(description="ISO 8601 with a UTC offset, between 2000 and 2100")]
"""A time an API client sends: naive (no offset) or outside 2000-2100 is refused with a 422 naming the field."""

# What Text refuses, as a JSON Schema pattern, so the OpenAPI states the rule: C0 controls but tab, line feed and
# carriage return; DEL and C1 controls; bidirectional overrides and isolates (shared/validation.py, multi-line).
CONTROL_FREE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]*$"


def _control_free(value: str) -> str:
    reason = forbidden_character(value, multiline=True)
    if reason is not None:
        raise ValueError(reason)
    return value


Text = Annotated[str, AfterValidator(_control_free), Field(json_schema_extra={"pattern": CONTROL_FREE})]
"""Free text or a filter an API client sends: refused (422 naming the field) when it holds a control character."""


# SQLSTATEs of text PostgreSQL refuses: character_not_in_repertoire (a NUL in a text value) and
# untranslatable_character (\\u0000 inside jsonb).
_UNSTORABLE_TEXT = {"22021", "22P05"}
_BODY_UNREADABLE = "There was an error parsing the body"


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)


# ---- what every operation documents ----------------------------------------------------------------------

BEARER_SCHEME = "bearerKey"
_ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
_INVALID_REF = {"$ref": "#/components/schemas/ValidationErrorBody"}
COMMON_RESPONSES: dict[str, str] = {
    "401": "Missing, unknown or revoked API key (checked before the body is read)",
    "403": "This key's role may not do this",
    "422": "Invalid input: `errors` names each field and the reason; nothing was changed",
    "503": "The database is busy (no connection free) or unavailable (restarting): nothing was changed; retry"
           " after `Retry-After` seconds",
}
# Every 503 carries Retry-After (seconds).
_RETRY_AFTER_HEADER = {"Retry-After": {"description": "Seconds to wait before retrying",
                                       "schema": {"type": "integer", "minimum": 1}}}


def _dependency_calls(dependant: Any) -> Iterator[Any]:
    for sub in getattr(dependant, "dependencies", []):
        yield sub.call
        yield from _dependency_calls(sub)


@dataclass(frozen=True)
class ApiRoute:
    """A JSON route as served: its full path (router prefixes included), methods, and the route itself."""

    path: str
    methods: frozenset[str]
    route: APIRoute
    in_schema: bool


def api_routes(app: FastAPI) -> Iterator[ApiRoute]:
    """Every APIRoute of the app, through included routers (FastAPI ≥ 0.16x keeps them nested)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield ApiRoute(route.path, frozenset(route.methods), route, route.include_in_schema)
        return
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            yield ApiRoute(context.path or route.path, frozenset(context.methods or route.methods), route,
                           bool(getattr(context, "include_in_schema", route.include_in_schema)))


def route_auth(route: APIRoute) -> tuple[bool, bool]:
    """(needs an API key, checks the key's role) for a route, read from its dependencies."""
    calls = list(_dependency_calls(route.dependant))
    return any(c is current_principal for c in calls), any(hasattr(c, "allowed_roles") for c in calls)


def document_api(app: FastAPI, schema: dict[str, Any], *,
                 security_schemes: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Make the OpenAPI say what every operation really answers, with the one error model.

    Every operation under /v1/ needs a key (401, checked first by BearerFirstMiddleware) and, when it checks a
    role, answers 403; every operation with parameters or a body answers 422 in ValidationErrorBody; every
    operation may answer 503 (with Retry-After) when the database pool is exhausted or the database cannot be
    reached: every documented operation reads the database (its key, or its data). Every other error answer is
    an ErrorBody.
    """
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for model in (ErrorBody, ValidationErrorBody):
        generated = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(generated.pop("$defs", {}))
        schemas[model.__name__] = generated
    schemes = components.setdefault("securitySchemes", {})
    schemes[BEARER_SCHEME] = {"type": "http", "scheme": "bearer", "bearerFormat": "shk_<id>_<secret>",
                              "description": "An API key: `shouhu keys create --role ROLE --unit UNIT`"}
    schemes.update(security_schemes or {})
    routes = {(served.path, method.lower()): served.route for served in api_routes(app) if served.in_schema
              for method in served.methods}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            route = routes.get((path, method))
            responses = operation.setdefault("responses", {})
            needs_key, checks_role = route_auth(route) if route is not None else (False, False)
            wanted = ["503"]
            if needs_key:
                operation.setdefault("security", [{BEARER_SCHEME: []}])
                wanted.append("401")
            if checks_role:
                wanted.append("403")
            if operation.get("parameters") or operation.get("requestBody"):
                wanted.append("422")
            for status in wanted:
                responses.setdefault(status, {"description": COMMON_RESPONSES[status]})
            if "503" in responses:
                responses["503"].setdefault("headers", _RETRY_AFTER_HEADER)
            for status, response in responses.items():
                if status == "422":
                    response["content"] = {"application/json": {"schema": _INVALID_REF}}
                    if response.get("description") == "Validation Error":
                        response["description"] = COMMON_RESPONSES["422"]
                elif status[0] in "45" and not response.get("content"):
                    response["content"] = {"application/json": {"schema": _ERROR_REF}}
    serialized = orjson.dumps(schema)
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's default 422 model, now referenced nowhere
        if f'"#/components/schemas/{unused}"'.encode() not in serialized:
            schemas.pop(unused, None)
    return schema


def _console_error_page(request: Request, status_code: int, detail: str | None) -> Response | None:
    """A browser on a console page gets an error page in words (shared/console), an API client keeps the JSON.

    Only for a person's browser navigating: not for HTMX fragments (the page shows those errors in place) nor
    for clients that do not ask for HTML.
    """
    if request.headers.get("hx-request") or "text/html" not in request.headers.get("accept", ""):
        return None
    for console in getattr(request.app.state, "consoles", ()):
        if console.owns(request.url.path):
            return console.error_page(request, status_code, detail)
    return None


# One icon for every service, so a browser's request for it is not a 404 in the logs (the consoles also link it).
FAVICON_SVG = (Path(__file__).parent / "console" / "static" / "favicon.svg").read_bytes()


def install_common(app: FastAPI, *, service: str,
                   security_schemes: dict[str, dict[str, Any]] | None = None) -> None:
    """Error handlers, the health/readiness/metrics routes, and the documented error model every service has."""

    def _unavailable(request: Request, exc: BaseException) -> JSONResponse:
        # A webhook refused now is a callback lost for good (Twilio does not resend): the callcenter's
        # reconciler sweeps for it once the database is back.
        hook = getattr(request.app.state, "on_database_unavailable", None)
        if hook is not None:
            hook()
        return database_unreachable(exc)

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _pool_exhausted(request: Request, exc: SQLAlchemyTimeoutError) -> JSONResponse:
        return _unavailable(request, exc)

    # The database away or restarting, however it surfaces: a refused or reset connection (OSError, which
    # includes TimeoutError) or asyncpg's own connection errors when they escape SQLAlchemy's wrapping.
    @app.exception_handler(DatabaseUnavailable)
    @app.exception_handler(OSError)
    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.InterfaceError)
    async def _connection_lost(request: Request, exc: Exception) -> JSONResponse:
        if not database_unavailable(exc):
            raise exc
        return _unavailable(request, exc)

    @app.exception_handler(FieldErrors)
    async def _fields(_request: Request, exc: FieldErrors) -> JSONResponse:
        return _unprocessable(exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = validation_errors(exc)
        page = _console_error_page(request, 422, "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5]))
        return page or _unprocessable(errors)

    @app.exception_handler(DBAPIError)
    async def _refused_by_database(request: Request, exc: DBAPIError) -> JSONResponse:
        # The database gone or restarting (connection lost, "shutting down", "starting up"): retry shortly.
        if database_unavailable(exc):
            return _unavailable(request, exc)
        # The last line for text PostgreSQL cannot store (a NUL, in text or JSON) that no field check caught:
        # the client's input, so a 422; any other database error stays a server error.
        if _sqlstate(exc) in _UNSTORABLE_TEXT:
            log.warning("db.unstorable_text", error=str(exc.orig)[:200])
            return _unprocessable([{"field": "body", "reason": "text with a character the database cannot store "
                                                                "(NUL, U+0000)"}])
        raise exc

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        page = _console_error_page(request, exc.status_code, str(exc.detail))
        if page is not None:
            return page
        if exc.status_code == 422:
            return _unprocessable(_errors_from_detail(str(exc.detail)))
        if exc.status_code == 400 and exc.detail == _BODY_UNREADABLE:
            # FastAPI's answer to a body it could not decode (not UTF-8): invalid input like any other.
            return _unprocessable([{"field": "body", "reason": "not readable as JSON (UTF-8 expected)"}])
        return JSONResponse(status_code=exc.status_code, content={"detail": str(exc.detail)},
                            headers=getattr(exc, "headers", None))

    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_api(app, generate_openapi(), security_schemes=security_schemes)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(FAVICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """The process is up (no dependency checked)."""
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        """Ready to serve: the database answers and its schema is at this code's migration head.

        Anyone may ask, so the answer says ready or not and nothing else (a
        database error names hosts, roles and databases); the reason is logged.
        """
        from shared.migrate import current_revision, head_revision

        try:
            # Briefly: a probe that waits out a connect or pool timeout would itself time out, not say "not ready".
            async with asyncio.timeout(READYZ_TIMEOUT_S), request.app.state.sessionmaker() as session:
                await session.execute(text("SELECT 1"))
                current = await current_revision(session)
        except Exception as exc:  # noqa: BLE001
            log.warning("readyz.database_unavailable", error=str(exc)[:500])
            return JSONResponse(status_code=503, content={"status": "not ready"})
        head = head_revision()
        if current != head:
            log.warning("readyz.migrations_pending", database_revision=current, code_revision=head)
            return JSONResponse(status_code=503, content={"status": "not ready"})
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BearerFirstMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestContextMiddleware, service=service)
