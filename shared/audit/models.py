"""The audit log: append-only, hash-chained, one entry per decision and state change."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base


class AuditEntry(Base):
    __tablename__ = "audit_log"

    # Position in the chain: 1, 2, 3... with no gaps, assigned under the chain-head lock.
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    # Who: "key:<key_id>:<name>", "system:<component>", "citizen:bot", ...
    actor: Mapped[str] = mapped_column(String(200))
    # What: "task.created", "warning.merged", "task.feedback", "task.breached", ...
    action: Mapped[str] = mapped_column(String(64))
    task_id: Mapped[uuid.UUID | None]
    case_id: Mapped[uuid.UUID | None]
    region_code: Mapped[str | None] = mapped_column(String(6))
    # Before/after/why as canonical JSON text. Text, not JSONB, so the bytes that
    # were hashed are the bytes stored: JSONB rewrites numbers and key order.
    body: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_log_task_id", "task_id", "seq"),
        Index("ix_audit_log_case_id", "case_id", "seq"),
        Index("ix_audit_log_at", "at", postgresql_using="brin"),
    )


class AuditChainHead(Base):
    """The last link of the chain. Its row lock serialises appends; its signature exposes a deleted tail.

    A trigger (migration 0014) lets it only move forward, to an entry of the log.
    """

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    # HMAC of (seq, hash, keyed_from) under the audit key (shared.audit.keys.head_signature).
    mac: Mapped[str | None] = mapped_column(String(64))
    # The first entry hashed with the key; those before it have plain SHA-256 hashes (written before 0014).
    keyed_from: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)
