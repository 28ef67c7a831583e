"""Appending to and verifying the keyed, hash-chained audit log.

How the chain stays consistent under concurrency: entries are *recorded* into
the session during the unit of work. In the session's `before_commit` hook
they are written, unhashed, as one `audit_staging` row; a deferred constraint
trigger (migrations 0002 and 0014) then chains them while the COMMIT runs: it
locks the single chain-head row, links each entry to the previous hash, writes
them to `audit_log` and moves the head. So the chain order is commit order, the
lock is held only inside the commit (no client round trip), and a transaction
that rolls back leaves no entry and no gap.

Why it is keyed (issue 11): with a plain SHA-256 chain, whoever can write the
database can rewrite an entry and recompute every hash after it, or cut the
tail and move the head back, and the check still passes. Since migration 0014
each entry's hash is an HMAC under SHOUHU_AUDIT_KEY (settings; never stored in
the database, see shared/audit/keys.py), and so is the head's signature: an
edit, a re-hash or a cut tail now needs the key. Entries written before 0014
keep their SHA-256 hashes (chain version 1); 0014 appended a keyed marker
entry (`audit.chain_keyed`) whose HMAC covers the last of them, so the old
entries are anchored by the key too. `keyed_from` on the head (itself signed)
says where version 2 starts.

What the key cannot show by itself: a head (and its signature) copied from an
old backup, or changes made by someone who also holds the key. A checkpoint
(`shouhu audit checkpoint`) kept outside the database covers both, for every
entry up to it: GET /v1/audit/verify?checkpoint=... compares.

Triggers refuse UPDATE and DELETE on the log and anything but a forward move
of the head; the services' database role may not write either table at all
(shared/db_roles.py). The hash is computed by PL/pgSQL when written and
recomputed here, independently, when verified: the two must agree
(`entry_hash` documents the material).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.audit.keys import Checkpoint, head_signature
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
    key: bytes | None,
    at_iso: str | None = None,
) -> str:
    """The entry's hash over every stored column and the previous entry's hash.

    HMAC-SHA-256 under the audit key (chain version 2, migration 0014), or plain
    SHA-256 with `key=None` (version 1: the entries written before 0014).
    The fields are joined with a unit separator (U+001F), which none of them
    can contain (actor and action are identifiers, the body is JSON, which
    escapes control characters), so no two different entries share a material.
    """
    material = "\x1f".join((
        str(seq), at_iso or iso_utc(at), actor, action, str(task_id) if task_id else "",
        str(case_id) if case_id else "", region_code or "", body, prev_hash,
    )).encode()
    if key is None:
        return hashlib.sha256(material).hexdigest()
    return hmac.digest(key, material, "sha256").hex()


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
    # The head this check walked to (what a checkpoint signs when the chain is sound).
    head_seq: int = 0
    head_hash: str = GENESIS_HASH


_HEAD = sql(
    "SELECT h.seq, h.hash, h.mac, h.keyed_from,"
    " (SELECT min(seq) FROM audit_log WHERE seq > h.seq) AS past_head"
    " FROM audit_chain_head h WHERE h.id = 1")


async def verify_chain(session: AsyncSession, *, key: bytes, checkpoint: Checkpoint | None = None,
                       chunk: int = 5000) -> ChainReport:
    """Walk the whole chain in order; report the first entry that was edited, removed or reordered.

    Without a checkpoint this finds any edit, deletion, re-hash or cut tail made
    without the key. With one (already checked with `Checkpoint.parse`) it also
    finds a chain shorter than the checkpoint, or different up to it.

    The head is read first, in one statement with the check for rows past it
    (one snapshot: the seal writes entries and moves the head in one
    transaction, so a committed row past the head was written around it).
    Entries appended while we walk are past the head we read and are left for
    the next verification, so a busy system never looks truncated.
    """
    head = (await session.execute(_HEAD)).one()
    head_seq, head_hash, keyed_from = head.seq, head.hash, head.keyed_from

    def bad(count: int, seq: int, reason: str) -> ChainReport:
        return ChainReport(False, count, seq, reason, head_seq, head_hash)

    if keyed_from is None:
        return bad(0, 1, "the chain head has no key boundary (migration 0014 not applied, or the head was altered)")
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
                return bad(count, expected_seq, "entry missing")
            if row.prev_hash != expected_prev:
                return bad(count, row.seq, "link to previous entry broken")
            recomputed = entry_hash(seq=row.seq, at=row.at, actor=row.actor, action=row.action, task_id=row.task_id,
                                    case_id=row.case_id, region_code=row.region_code, body=row.body,
                                    prev_hash=row.prev_hash, key=key if row.seq >= keyed_from else None)
            if not hmac.compare_digest(recomputed, row.hash):
                return bad(count, row.seq, "entry content does not match its hash")
            if checkpoint is not None and row.seq == checkpoint.entries and row.hash != checkpoint.hash:
                # Sound by itself, yet not the chain the checkpoint saw: rewritten by someone with the key.
                return bad(count, row.seq, "entries up to the checkpoint were rewritten (hash differs from the checkpoint)")
            expected_prev = row.hash
            expected_seq += 1
            count += 1
            last_seq = row.seq
    if last_seq != head_seq or head_hash != expected_prev:
        # The newest entries were deleted (or the head was moved): the chain ends too early.
        return bad(count, last_seq + 1, "chain ends before its recorded head")
    if checkpoint is not None and head_seq < checkpoint.entries:
        return bad(count, head_seq + 1, f"chain is shorter than the checkpoint ({checkpoint.entries} entries): "
                                        "entries were removed")
    if checkpoint is not None and checkpoint.entries == 0 and checkpoint.hash != GENESIS_HASH:
        return bad(count, 1, "checkpoint of an empty chain with a hash: not a checkpoint of this chain")
    expected_mac = head_signature(key, seq=head_seq, hash_=head_hash, keyed_from=keyed_from)
    if head.mac is None or not hmac.compare_digest(expected_mac, head.mac):
        # Every entry is sound but the head was not moved here by the seal: entries after it were cut.
        return bad(count, head_seq + 1, "the chain head's signature does not match: entries after it were removed")
    if head.past_head is not None:
        return bad(count, head.past_head, "entries past the chain head (written around the sealing trigger)")
    return ChainReport(True, count, None, None, head_seq, head_hash)
