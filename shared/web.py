"""What every service's HTTP app has: request ids, JSON errors naming the field, health, readiness, metrics."""

from __future__ import annotations

import time
import uuid
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.security_headers import SecurityHeadersMiddleware

log = structlog.get_logger(__name__)

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


def validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    errors = []
    for err in exc.errors():
        reason = err.get("msg", "invalid")
        reason = reason.removeprefix("Value error, ")
        errors.append({"field": _field_name(err.get("loc", ())), "reason": reason})
    return errors


class FieldErrors(Exception):
    """Raise from a route for a 422 in the same shape as request validation errors."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['reason']}" for e in errors))
        self.errors = errors


def _unprocessable(errors: list[dict[str, str]]) -> JSONResponse:
    summary = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
    return JSONResponse(status_code=422, content={"detail": summary, "errors": errors})


def install_common(app: FastAPI, *, service: str) -> None:
    """Error handlers and the health/readiness/metrics routes every service exposes."""

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _pool_exhausted(_request: Request, _exc: SQLAlchemyTimeoutError) -> JSONResponse:
        # Every database connection is busy: a retryable 503, not an unexplained 500.
        log.warning("db.pool_exhausted")
        return JSONResponse(status_code=503, content={"detail": "busy: no database connection free; retry shortly"},
                            headers={"Retry-After": "1"})

    @app.exception_handler(FieldErrors)
    async def _fields(_request: Request, exc: FieldErrors) -> JSONResponse:
        return _unprocessable(exc.errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _unprocessable(validation_errors(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail},
                            headers=getattr(exc, "headers", None))

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
            async with request.app.state.sessionmaker() as session:
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

    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestContextMiddleware, service=service)
