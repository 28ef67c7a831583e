"""Appending to and verifying the hash-chained audit log.

How the chain stays consistent under concurrency: entries are *recorded* into
the session during the unit of work. In the session's `before_commit` hook
they are written, unhashed, as one `audit_staging` row; a deferred constraint
trigger (migration 0002) then chains them while the COMMIT runs: it locks the
single chain-head row, links each entry to the previous hash, writes them to
`audit_log` and moves the head. So the chain order is commit order, the lock
is held only inside the commit (no client round trip), and a transaction that
rolls back leaves no entry and no gap.

A database trigger refuses UPDATE and DELETE on the log, so an edit needs
someone who can disable triggers; `verify_chain` then finds it. The hash is
computed by PL/pgSQL when written and recomputed here, independently, when
verified: the two must agree (`entry_hash` documents the material).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.sql import recordset, sql

GENESIS_HASH = "0" * 64
_PENDING_KEY = "shouhu_audit_pending"


@dataclass(slots=True)
class PendingEntry:
    at: datetime
    actor: str
    action: str
    task_id: uuid.UUID | None
    case_id: uuid.UUID | None
    region_code: str | None
    body: str  # canonical JSON, made when recorded (outside the commit, where the event loop can still run)


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces, UTF-8 kept) for hashing and storage."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=_json_default).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    # Decimal and anything else: their string form, never a float (floats do not round-trip).
    return str(value)


def iso_utc(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    task_id: uuid.UUID | None,
    case_id: uuid.UUID | None,
    region_code: str | None,
    body: str,
    prev_hash: str,
    at_iso: str | None = None,
) -> str:
    """SHA-256 over every stored column of the entry and the previous entry's hash.

    The fields are joined with a unit separator (U+001F), which none of them
    can contain (actor and action are identifiers, the body is JSON, which
    escapes control characters), so no two different entries share a material.
    """
    material = "\x1f".join((
        str(seq), at_iso or iso_utc(at), actor, action, str(task_id) if task_id else "",
        str(case_id) if case_id else "", region_code or "", body, prev_hash,
    ))
    return hashlib.sha256(material.encode()).hexdigest()


def record(
    session: AsyncSession | Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    task_id: uuid.UUID | None = None,
    case_id: uuid.UUID | None = None,
    region_code: str | None = None,
    **body: Any,
) -> None:
    """Record an audit entry in this unit of work; it is chained and written when the caller commits."""
    session.info.setdefault(_PENDING_KEY, []).append(
        PendingEntry(at=at, actor=actor, action=action, task_id=task_id, case_id=case_id,
                     region_code=region_code, body=canonical_json(body))
    )


@event.listens_for(Session, "before_commit")
def _append_pending(session: Session) -> None:
    pending: list[PendingEntry] | None = session.info.pop(_PENDING_KEY, None)
    if pending:
        _append(session, pending)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def _append(session: Session, pending: list[PendingEntry]) -> None:
    # One row per transaction; the deferred trigger `audit_seal` chains it at COMMIT.
    session.execute(
        sql("INSERT INTO audit_staging (entries) VALUES (CAST(:entries AS jsonb))"),
        {"entries": recordset({"at": e.at, "actor": e.actor, "action": e.action, "task_id": e.task_id,
                               "case_id": e.case_id, "region_code": e.region_code, "body": e.body}
                              for e in pending)},
    )


@dataclass
class ChainReport:
    ok: bool
    entries: int
    first_bad: int | None
    reason: str | None = None


async def verify_chain(session: AsyncSession, *, chunk: int = 5000) -> ChainReport:
    """Walk the whole chain in order; report the first entry that was edited, removed or reordered.

    The head is read first: entries appended while we walk are past it and are
    left for the next verification, so a busy system never looks truncated.
    """
    head_seq, head_hash = (await session.execute(sql("SELECT seq, hash FROM audit_chain_head WHERE id = 1"))).one()
    expected_prev = GENESIS_HASH
    expected_seq = 1
    count = 0
    last_seq = 0
    while last_seq < head_seq:
        rows = (
            await session.execute(
                sql(
                    "SELECT seq, at, actor, action, task_id, case_id, region_code, body, prev_hash, hash "
                    "FROM audit_log WHERE seq > :after AND seq <= :head ORDER BY seq LIMIT :n"
                ),
                {"after": last_seq, "head": head_seq, "n": chunk},
            )
        ).all()
        if not rows:
            break
        for row in rows:
            if row.seq != expected_seq:
                # A gap: entry `expected_seq` was deleted.
                return ChainReport(False, count, expected_seq, "entry missing")
            if row.prev_hash != expected_prev:
                return ChainReport(False, count, row.seq, "link to previous entry broken")
            recomputed = entry_hash(seq=row.seq, at=row.at, actor=row.actor, action=row.action, task_id=row.task_id,
                                    case_id=row.case_id, region_code=row.region_code, body=row.body,
                                    prev_hash=row.prev_hash)
            if recomputed != row.hash:
                return ChainReport(False, count, row.seq, "entry content does not match its hash")
            expected_prev = row.hash
            expected_seq += 1
            count += 1
            last_seq = row.seq
    if last_seq != head_seq or head_hash != expected_prev:
        # The newest entries were deleted (or the head was moved): the chain ends too early.
        return ChainReport(False, count, last_seq + 1, "chain ends before its recorded head")
    return ChainReport(True, count, None)
