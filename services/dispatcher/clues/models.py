"""Clues citizens report (平安厅信箱): a suspicious number, URL or account, tracked to an answer."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

KINDS = ("phone", "url", "account", "other")


class Clue(Base):
    __tablename__ = "clues"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # The reference the citizen was given, e.g. XS20261121-7KQ2MD.
    ref: Mapped[str] = mapped_column(String(24), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    value: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(20))  # "telegram", later "hotline", "web"
    reporter_chat_id: Mapped[int | None] = mapped_column(BigInteger)
    reporter_phone: Mapped[str | None] = mapped_column(String(20))
    # The unit that should answer: the region of the reporter's latest case, when known.
    region_code: Mapped[str | None] = mapped_column(String(6))
    status: Mapped[str] = mapped_column(String(12))  # new -> routed -> answered -> closed
    reported_at: Mapped[datetime]
    created_at: Mapped[datetime]
    routed_at: Mapped[datetime | None]
    routed_by: Mapped[str | None] = mapped_column(String(200))
    # 限时反馈: the unit must answer the citizen by then; past it the clue is overdue.
    answer_due_at: Mapped[datetime | None]
    answer: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime | None]
    answered_by: Mapped[str | None] = mapped_column(String(200))
    closed_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_clues_region", "region_code", "reported_at"),)
