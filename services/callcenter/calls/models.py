"""Outbound calls: one row per attempt (the idempotency guard), and numbers never to call again."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Identity, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

# Attempt states. "dialing" is written before the Twilio request: a rerun that finds
# it without a call sid does not dial again (it cannot know whether the phone rang).
DIALING = "dialing"
PLACED = "placed"
FINAL_STATES = ("completed", "busy", "no-answer", "failed", "canceled", "skipped", "uncertain")


class CallAttempt(Base):
    __tablename__ = "call_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    task_id: Mapped[uuid.UUID]
    channel: Mapped[str] = mapped_column(String(16))  # "auto_call" (automated warning) or "operator_call"
    attempt: Mapped[int] = mapped_column(Integer)
    to_number: Mapped[str] = mapped_column(String(20))
    from_number: Mapped[str] = mapped_column(String(20))
    lang: Mapped[str] = mapped_column(String(5), server_default="zh")
    fraud_type: Mapped[str | None] = mapped_column(String(32))  # from the job: picks the spoken warning
    call_sid: Mapped[str | None] = mapped_column(String(40), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    answered_by: Mapped[str | None] = mapped_column(String(24))
    digits: Mapped[str | None] = mapped_column(String(32))  # every key pressed, in order
    outcome: Mapped[str | None] = mapped_column(String(24))  # what was reported to the dispatcher
    error: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("task_id", "channel", "attempt", name="uq_call_attempts_task_channel_attempt"),
        Index("ix_call_attempts_to_created", "to_number", "created_at"),
    )


class DoNotCall(Base):
    """Numbers confirmed wrong (a wrong-number disposition): never dialled again."""

    __tablename__ = "do_not_call"

    phone: Mapped[str] = mapped_column(String(20), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    added_by: Mapped[str] = mapped_column(String(200))
    added_at: Mapped[datetime]
