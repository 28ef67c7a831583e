"""FastAPI dependencies for authentication, roles and jurisdiction; the key is checked before the body is read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import structlog
from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.auth.service import Principal
from shared.db import database_unavailable

log = structlog.get_logger(__name__)

# Every route under this prefix takes `Authorization: Bearer <key>` (the contract's "API routes"); consoles,
# webhooks, health and metrics live elsewhere.
API_PREFIX = "/v1/"
# Where BearerFirstMiddleware leaves the caller it authenticated, for current_principal to take.
_PRINCIPAL_SCOPE_KEY = "shouhu.principal"


def pool_exhausted() -> JSONResponse:
    """Every database connection is busy: a retryable 503, not an unexplained 500."""
    log.warning("db.pool_exhausted")
    return JSONResponse(status_code=503, content={"detail": "busy: no database connection free; retry shortly"},
                        headers={"Retry-After": "1"})


# While the database restarts (seconds): ask clients back soon, not at once.
UNAVAILABLE_RETRY_AFTER_S = 2


def database_unreachable(exc: BaseException | None = None) -> JSONResponse:
    """The database cannot be reached or is restarting: the same retryable 503, never a 500 or a dropped request.

    The answer names no host or role (anyone may see it); the reason is logged.
    """
    if isinstance(exc, SQLAlchemyTimeoutError):
        return pool_exhausted()
    log.warning("db.unavailable", error=f"{type(exc).__name__}: {exc}"[:300] if exc is not None else None)
    return JSONResponse(status_code=503,
                        content={"detail": "the database is unavailable (restarting?); retry shortly"},
                        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})


async def _authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    state = request.app.state
    principal = await state.key_cache.authenticate(state.sessionmaker, presented.strip())
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key",
                            headers={"WWW-Authenticate": "Bearer"})
    return principal


class BearerFirstMiddleware:
    """Answer 401 to an API request without a known key before anything reads its body.

    FastAPI parses a JSON body before it runs a route's dependencies, so without this an unauthenticated
    request with malformed JSON would learn 422 (and make the server parse whatever it sent) instead of 401.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        try:
            scope[_PRINCIPAL_SCOPE_KEY] = await _authenticate(Request(scope))
        except HTTPException as exc:
            await JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)(scope, receive, send)
            return
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            await database_unreachable(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def current_principal(request: Request) -> Principal:
    """The caller behind `Authorization: Bearer <key>`; 401 when missing or unknown."""
    principal = request.scope.get(_PRINCIPAL_SCOPE_KEY) or await _authenticate(request)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str) -> Callable[..., Principal]:
    """A dependency that admits only keys with one of `roles` (admin is always admitted)."""
    allowed = set(roles) | {"admin"}

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.role not in allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"a '{principal.role}' key may not do this; needs one of: {', '.join(sorted(allowed))}")
        return principal

    dependency.allowed_roles = frozenset(allowed)  # type: ignore[attr-defined]  # read by the OpenAPI pass
    return dependency
