"""Campaign deliveries: one row per chat per campaign, and each campaign's counts.

The primary key (campaign_id, chat_id) is what makes "nobody gets the same
campaign twice" hold under retried jobs and crashes: a chat is inserted once,
and its row moves from `queued` to `sending` by exactly one worker (a
conditional UPDATE) before any message goes. The counts are kept in the
transaction that gives each row its final status, so a progress bar reads one
row (a GROUP BY over 100,000 rows every second would not do).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

QUEUED = "queued"
SENDING = "sending"  # reserved by one worker just before its request to Telegram
SENT = "sent"
FAILED = "failed"  # Telegram refused it (bad request, chat gone) or gave up after retries
BLOCKED = "blocked"  # 403 from Telegram, or the citizen unbound (/stop) before their turn
# The bot stopped during the request: Telegram may or may not have shown it. Never resent
# (a publicity message lost is cheaper than one received twice; alerts choose the other way).
UNCERTAIN = "uncertain"
FINAL = (SENT, FAILED, BLOCKED, UNCERTAIN)


class CampaignRecipient(Base):
    __tablename__ = "campaign_recipients"

    campaign_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    lang: Mapped[str] = mapped_column(String(5))
    status: Mapped[str] = mapped_column(String(10))
    error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    sent_at: Mapped[datetime | None]


class CampaignDeliveryCount(Base):
    __tablename__ = "campaign_delivery_counts"

    campaign_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    sent: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    blocked: Mapped[int] = mapped_column(Integer, server_default="0")
    uncertain: Mapped[int] = mapped_column(Integer, server_default="0")
