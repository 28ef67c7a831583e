"""Seats: one per operator key, with the state a supervisor sees (available, on call, wrap-up, paused, offline)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

STATES = ("available", "on_call", "wrap_up", "paused", "offline")


class Seat(Base):
    __tablename__ = "seats"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)  # the operator's API key
    name: Mapped[str] = mapped_column(String(100))
    unit: Mapped[str] = mapped_column(String(6))
    state: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(Text)  # why paused
    phone: Mapped[str | None] = mapped_column(String(20))  # the seat's own phone: click-to-call rings it first
    updated_at: Mapped[datetime]
    # In wrap_up: when the seat is available again (a disposition's wrap-up time, or the time to record one after
    # a transferred citizen's call); reads and a sweep end it then (seats/service.py end_wrap_ups).
    wrap_up_until: Mapped[datetime | None]
