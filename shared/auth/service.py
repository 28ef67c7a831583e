"""Creating and checking API keys, and the jurisdiction rule (a key sees only its unit)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.audit import service as audit
from shared.auth.models import ApiKey
from shared.ids import uuid7

log = structlog.get_logger(__name__)

ROLES = ("ingest", "operator", "officer", "supervisor", "admin")
_KEY_RE = re.compile(r"^shk_([a-z0-9]{8,16})_([A-Za-z0-9_-]{20,128})$")
_UNIT_RE = re.compile(r"^(\d{2}|\d{4}|\d{6})?$")


class InvalidKeySpec(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved from the bearer key on every request."""

    key_id: str
    name: str
    role: str
    unit: str

    @property
    def actor(self) -> str:
        """How this caller appears in the audit log."""
        return f"key:{self.key_id}:{self.name}"

    def covers(self, region_code: str | None) -> bool:
        """True when `region_code` lies inside this key's jurisdiction."""
        return region_code is not None and region_code.startswith(self.unit)


def normalize_unit(unit: str) -> str:
    unit = unit.strip()
    if unit.lower() in ("all", "*", "全国"):
        return ""
    if not _UNIT_RE.match(unit):
        raise InvalidKeySpec("unit must be a region-code prefix of 2, 4 or 6 digits (e.g. 33, 3301, 330106) or 'all'")
    return unit


def _sha256(secret: str) -> str:
    # The secret is 32 random bytes, so a plain SHA-256 cannot be brute-forced;
    # a slow password hash would only cost CPU on every request.
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(session: AsyncSession, *, role: str, unit: str, name: str,
                     secret_value: str | None = None) -> tuple[ApiKey, str]:
    """Store a new key (hashed) and return it with the full key text, shown once."""
    if role not in ROLES:
        raise InvalidKeySpec(f"role must be one of {', '.join(ROLES)}")
    unit = normalize_unit(unit)
    if secret_value is not None:
        match = _KEY_RE.match(secret_value)
        if match:
            key_id, secret = match.groups()
        else:
            # A bootstrap key chosen by the operator: derive a stable id from it.
            key_id, secret = hashlib.sha256(secret_value.encode()).hexdigest()[:12], secret_value
    else:
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    row = ApiKey(id=uuid7(), key_id=key_id, secret_sha256=_sha256(secret), role=role, unit=unit,
                 name=(name or role)[:100])
    session.add(row)
    await session.flush()
    full = secret_value if secret_value is not None else f"shk_{key_id}_{secret}"
    return row, full


async def ensure_bootstrap_key(session: AsyncSession, *, secret_value: str, unit: str) -> None:
    key_id = _split(secret_value)[0]
    existing = (await session.execute(select(ApiKey).where(ApiKey.key_id == key_id))).scalar_one_or_none()
    if existing is None:
        await create_key(session, role="admin", unit=unit, name="bootstrap-admin", secret_value=secret_value)


def _split(presented: str) -> tuple[str, str]:
    match = _KEY_RE.match(presented)
    if match:
        return match.group(1), match.group(2)
    return hashlib.sha256(presented.encode()).hexdigest()[:12], presented


async def list_keys(session: AsyncSession, *, unit: str) -> list[ApiKey]:
    """Keys whose unit lies inside `unit` (an admin manages only those), newest first; secrets never leave."""
    query = select(ApiKey).where(ApiKey.unit.startswith(unit, autoescape=True)).order_by(ApiKey.created_at.desc(),
                                                                                         ApiKey.key_id)
    return list((await session.execute(query)).scalars())


async def issue_key(session: AsyncSession, *, role: str, unit: str, name: str, issuer: Principal,
                    now: datetime) -> tuple[ApiKey, str]:
    """An admin creates a key inside their own unit; audited. InvalidKeySpec names what is wrong."""
    name = name.strip()
    if not name:
        raise InvalidKeySpec("name: give the key a name (who or what uses it)")
    unit = normalize_unit(unit)
    if not unit.startswith(issuer.unit):
        raise InvalidKeySpec(f"unit must lie inside your own unit ({issuer.unit or 'nationwide'})")
    row, full = await create_key(session, role=role, unit=unit, name=name)
    audit.record(session, at=now, actor=issuer.actor, action="key.created", region_code=unit or None,
                 key_id=row.key_id, role=role, unit=unit, name=row.name)
    return row, full


class KeyNotFound(LookupError):
    pass


async def revoke_key(session: AsyncSession, *, key_id: str, issuer: Principal, now: datetime) -> ApiKey:
    """Revoke a key inside the admin's unit (idempotent: an already revoked key keeps its first time); audited.

    Its console sessions end at once (they re-read the key); a process's KeyCache may accept it for up to
    its ttl_s more, except in the process that revoked it (KeyCache.forget).
    """
    row = (await session.execute(select(ApiKey).where(ApiKey.key_id == key_id).with_for_update())).scalar_one_or_none()
    if row is None or not row.unit.startswith(issuer.unit):
        raise KeyNotFound(key_id)
    if row.revoked_at is None:
        row.revoked_at = now
        audit.record(session, at=now, actor=issuer.actor, action="key.revoked", region_code=row.unit or None,
                     key_id=row.key_id, role=row.role, unit=row.unit, name=row.name)
    return row


# How stale a key's last_used_at may be: an admin needs "in use today", not each request.
LAST_USED_EVERY_S = 60.0


class KeyCache:
    """Verified keys for `ttl_s` seconds, so a busy ingest endpoint does not read the key table per request.

    A revoked key therefore keeps working for at most `ttl_s` seconds in each process (but at once stops in
    the process that revoked it, through `forget`). A key's last use is written when the cache reads the key
    (at most once per `ttl_s` per process), on that read's own connection and only if the stored time is over
    LAST_USED_EVERY_S old: a separate write per request took a second pool connection, and 1,600 seats
    signing on at once ran the pool dry (503s in `shouhu bench calls`).
    """

    def __init__(self, ttl_s: float = 30.0) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, Principal | None]] = {}

    def forget(self, key_id: str) -> None:
        """Drop what is cached for a key (it was just revoked here)."""
        for digest in [d for d, (_, p) in self._entries.items() if p is not None and p.key_id == key_id]:
            del self._entries[digest]

    async def authenticate(self, session_factory, presented: str) -> Principal | None:  # noqa: ANN001
        return await self._verify(session_factory, presented)

    async def _verify(self, session_factory, presented: str) -> Principal | None:  # noqa: ANN001
        now = time.monotonic()
        digest = _sha256(presented)
        hit = self._entries.get(digest)
        if hit and now - hit[0] < self.ttl_s:
            return hit[1]
        key_id, secret = _split(presented)
        async with session_factory() as session:
            row = (await session.execute(select(ApiKey).where(ApiKey.key_id == key_id))).scalar_one_or_none()
            principal = None
            if row is not None and row.revoked_at is None and hmac.compare_digest(row.secret_sha256, _sha256(secret)):
                principal = Principal(key_id=row.key_id, name=row.name, role=row.role, unit=row.unit)
                await _note_use(session, row.key_id)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (now, principal)
        return principal


async def _note_use(session: AsyncSession, key_id: str) -> None:
    """Record that a key was used (if the stored time is stale), committed at once; bookkeeping never fails a request."""
    try:
        await session.execute(
            update(ApiKey).where(ApiKey.key_id == key_id,
                                 or_(ApiKey.last_used_at.is_(None),
                                     ApiKey.last_used_at < func.now() - timedelta(seconds=LAST_USED_EVERY_S)))
            .values(last_used_at=func.now()))
        await session.commit()
    except Exception as exc:  # noqa: BLE001
        await session.rollback()
        log.warning("auth.last_used_not_written", key_id=key_id, error=f"{type(exc).__name__}: {exc}"[:200])
