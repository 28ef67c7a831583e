"""Warning records as received, with the answer we gave (so a replay gets the same answer)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Numeric, SmallInteger, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base


class WarningRecord(Base):
    __tablename__ = "warnings"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    source_ref: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime]
    occurred_at: Mapped[datetime]
    phone: Mapped[str] = mapped_column(String(20))
    fraud_type: Mapped[str] = mapped_column(String(32))
    signal: Mapped[str] = mapped_column(String(32))
    region_code: Mapped[str] = mapped_column(String(6))
    amount_at_risk: Mapped[Decimal | None] = mapped_column(Numeric(16, 2))
    risk_score: Mapped[int | None] = mapped_column(SmallInteger)
    subject: Mapped[dict[str, Any] | None]
    details: Mapped[dict[str, Any] | None]
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id"))
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id"))
    # The answer given at ingest: the task's tier and deadline then, this warning's reasons.
    tier: Mapped[str] = mapped_column(String(6))
    due_at: Mapped[datetime]
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    merged: Mapped[bool] = mapped_column(Boolean)
    notices: Mapped[list[str] | None] = mapped_column(JSONB)
    ingested_by: Mapped[str] = mapped_column(String(200))
    # The sending key's unit ('' nationwide): the idempotency key and what its answers may show are scoped by it.
    ingest_unit: Mapped[str] = mapped_column(String(6), server_default="")

    __table_args__ = (
        # The idempotency key: the sender's own id, per sender, per unit of the sending key (migration 0014).
        UniqueConstraint("source", "source_ref", "ingest_unit", name="uq_warnings_source_ref_unit"),
        # A person's history: cases.phone (indexed) -> warnings.case_id. No index on
        # warnings.phone: it would cost every insert for a lookup the cases index serves.
        Index("ix_warnings_case_id", "case_id"),
    )
