"""FastAPI dependencies for authentication, roles and jurisdiction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from shared.auth.service import Principal


async def current_principal(request: Request) -> Principal:
    """The caller behind `Authorization: Bearer <key>`; 401 when missing or unknown."""
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

    return dependency
