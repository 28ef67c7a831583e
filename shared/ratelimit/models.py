"""The shared limiter's rows: tokens (N per bucket), turns (one per key), paces (one next start per key)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base


class RateToken(Base):
    """One of a bucket's N tokens: free once busy_until (database clock) has passed."""

    __tablename__ = "rate_tokens"

    bucket: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    # Held: now + the crash lease (pushed out while a slow request runs); released: the response + hold_s.
    busy_until: Mapped[datetime]
    # Who holds it (random per acquisition): a release whose lease was taken over changes nothing.
    holder: Mapped[int | None] = mapped_column(BigInteger)


class RateTurn(Base):
    """One key's turn (a chat): one holder at a time, the next one only interval_s after the release."""

    __tablename__ = "rate_turns"

    bucket: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    busy_until: Mapped[datetime]
    holder: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_rate_turns_busy_until", "busy_until"),)  # the sweep of old turns


class RatePace(Base):
    """Starts spaced by an interval for one key (a Twilio account): the next free start."""

    __tablename__ = "rate_paces"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_at: Mapped[datetime]
