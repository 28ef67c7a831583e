"""Console sign-in: an API key is exchanged for a server-side session behind an HttpOnly, SameSite cookie.

- The cookie holds a random token; the database keeps only its SHA-256, so a
  leaked table does not yield live sessions.
- Each session belongs to one service (the dispatcher's supervisor console or
  the callcenter's operator console): the services share a host name in
  development, and cookies are not separated by port.
- Every request re-reads the key through the session, so a revoked key ends
  its sessions at once; sign-out deletes the row.
- CSRF: a synchronizer token per session, sent back in a hidden form field or
  the X-CSRF-Token header (htmx), compared in constant time; the cookie is
  also SameSite=Strict and a foreign Origin is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth.service import Principal
from shared.sql import sql

SESSION_TTL = timedelta(hours=12)  # one shift


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """A signed-in browser: who it is (the key), and its CSRF token."""

    principal: Principal
    csrf_token: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(session: AsyncSession, principal: Principal, *, service: str, now: datetime,
                       ttl: timedelta = SESSION_TTL) -> str:
    """Store a new session for `principal` and return the cookie token (shown to the browser only).

    `ttl` is measured on the services' clock: on a fast one (SHOUHU_TIME_SCALE) the caller stretches the
    shift so that it still lasts twelve real hours.
    """
    token = secrets.token_urlsafe(32)
    await session.execute(
        sql("INSERT INTO console_sessions (token_sha256, service, key_id, csrf_token, created_at, expires_at)"
            " VALUES (:t, :s, :k, :c, :now, :exp)"),
        {"t": _digest(token), "s": service, "k": principal.key_id, "c": secrets.token_urlsafe(24), "now": now,
         "exp": now + ttl})
    # Expired sessions of this key are dropped here rather than by a sweeper.
    await session.execute(sql("DELETE FROM console_sessions WHERE key_id = :k AND expires_at < :now"),
                          {"k": principal.key_id, "now": now})
    return token


async def resolve(session: AsyncSession, token: str, *, service: str, now: datetime) -> ConsoleUser | None:
    """The signed-in user behind a cookie token, or None (unknown, expired, other service, key revoked)."""
    row = (await session.execute(
        sql("SELECT s.csrf_token, k.key_id, k.name, k.role, k.unit FROM console_sessions s"
            " JOIN api_keys k ON k.key_id = s.key_id"
            " WHERE s.token_sha256 = :t AND s.service = :s AND s.expires_at > :now AND k.revoked_at IS NULL"),
        {"t": _digest(token), "s": service, "now": now})).first()
    if row is None:
        return None
    return ConsoleUser(Principal(key_id=row.key_id, name=row.name, role=row.role, unit=row.unit), row.csrf_token)


async def close_session(session: AsyncSession, token: str) -> None:
    await session.execute(sql("DELETE FROM console_sessions WHERE token_sha256 = :t"), {"t": _digest(token)})


def csrf_matches(expected: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(expected.encode(), presented.encode())
