"""Cases: all warnings about one person while their case is open."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

OPEN = "open"
CLOSED = "closed"


class Case(Base):
    __tablename__ = "cases"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(20))  # E.164
    status: Mapped[str] = mapped_column(String(10))
    tier: Mapped[str] = mapped_column(String(6))
    region_code: Mapped[str] = mapped_column(String(6))
    warning_count: Mapped[int] = mapped_column(Integer)
    first_warning_at: Mapped[datetime]
    last_warning_at: Mapped[datetime]
    created_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]

    __table_args__ = (
        # One open case per person, enforced by the database: two warnings for the
        # same phone arriving at the same moment cannot open two cases.
        Index("ux_cases_open_phone", "phone", unique=True, postgresql_where=text("status = 'open'")),
        Index("ix_cases_phone", "phone"),
    )
