"""One row per alert sent to one chat for one task attempt: the idempotency guard and the citizen's answer."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Identity, Index, Integer, SmallInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

SENDING = "sending"  # reserved; no request has gone out yet
REQUESTED = "requested"  # a request's intent is committed: it may be on its way (see alerts/delivery.py)
SENT = "sent"
BLOCKED = "blocked"
FAILED = "failed"


class BotDelivery(Base):
    __tablename__ = "bot_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    task_id: Mapped[uuid.UUID]
    attempt: Mapped[int] = mapped_column(Integer)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    lang: Mapped[str] = mapped_column(String(5))
    # The task's facts as the alert job gave them (the bot never reads the dispatcher's tables).
    fraud_type: Mapped[str | None] = mapped_column(String(32))
    region_code: Mapped[str | None] = mapped_column(String(6))
    case_id: Mapped[uuid.UUID | None]
    status: Mapped[str] = mapped_column(String(10))
    # Requests made (each intent committed just before its request) and when the last one went.
    tries: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    intent_at: Mapped[datetime | None]
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    # The first button the citizen pressed on this alert (later presses record nothing).
    feedback: Mapped[str | None] = mapped_column(String(20))
    feedback_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("task_id", "attempt", "chat_id", name="uq_bot_deliveries_attempt_chat"),
        Index("ix_bot_deliveries_chat_task", "chat_id", "task_id"),
    )
