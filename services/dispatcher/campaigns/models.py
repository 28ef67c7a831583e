"""Campaigns and their recipients.

A campaign is owned by the unit of the key that made it and targets a region
prefix inside that unit. Its recipients are materialised once, when it starts:
one row per Telegram chat, primary key (campaign_id, chat_id). That key is what
makes "nobody gets the same campaign twice" hold under double submits, retried
jobs and crashes: a chat can be inserted once, and a row is moved from `queued`
to `sending` by exactly one worker (a conditional UPDATE) before any message goes.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

# Campaign lifecycle. No drafts: the console previews the count before it schedules,
# and a campaign that should not go out is cancelled.
SCHEDULED = "scheduled"  # waiting for send_at; its "campaign.start" job is queued
SENDING = "sending"  # recipients materialised, bot jobs queued or running
DONE = "done"  # every recipient has a final status
CANCELLED = "cancelled"
LIVE = (SCHEDULED, SENDING)

# Recipient statuses.
R_QUEUED = "queued"
R_SENDING = "sending"  # reserved by one worker just before its request to Telegram
R_SENT = "sent"
R_FAILED = "failed"  # Telegram refused it (bad request, chat gone) or gave up after retries
R_BLOCKED = "blocked"  # 403 from Telegram, or the citizen unbound (/stop) before their turn
# The bot stopped during the request: Telegram may or may not have shown it. Never resent
# (a publicity message lost is cheaper than one received twice; alerts choose the other way).
R_UNCERTAIN = "uncertain"
R_CANCELLED = "cancelled"
FINAL = (R_SENT, R_FAILED, R_BLOCKED, R_UNCERTAIN)


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    unit: Mapped[str] = mapped_column(String(6))  # the creating key's unit ("" = nationwide)
    name: Mapped[str] = mapped_column(String(100))
    # {"region_prefix", "age_min", "age_max", "fraud_types", "days"} as validated (schemas.SegmentIn).
    segment: Mapped[dict[str, Any]]
    # Copied out of the segment: the scope filter of every read ("visible when inside my unit").
    region_prefix: Mapped[str] = mapped_column(String(6))
    template: Mapped[str | None] = mapped_column(String(40))  # None: the supervisor's own text
    lang: Mapped[str | None] = mapped_column(String(5))  # own text: its language; template: None (each chat's own)
    # The exact text per language, fixed when scheduled: what was approved is what is sent,
    # even if templates.yaml changes before send_at.
    texts: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(10))
    send_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    # A double-submitted form (or a retried POST) carries the same ref: the first campaign is returned.
    client_ref: Mapped[str | None] = mapped_column(String(64))
    preview_count: Mapped[int] = mapped_column(Integer)  # the count shown when it was scheduled
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None] = mapped_column(String(200))
    # Counters kept in the transaction that gives each recipient its final status, so the
    # progress bar reads one row (a GROUP BY over 100,000 recipients every second would not do).
    total: Mapped[int] = mapped_column(Integer, server_default="0")
    sent: Mapped[int] = mapped_column(Integer, server_default="0")
    failed: Mapped[int] = mapped_column(Integer, server_default="0")
    blocked: Mapped[int] = mapped_column(Integer, server_default="0")
    uncertain: Mapped[int] = mapped_column(Integer, server_default="0")

    __table_args__ = (
        Index("ix_campaigns_region", "region_prefix", "created_at", postgresql_ops={"region_prefix": "text_pattern_ops"}),
        UniqueConstraint("created_by", "client_ref", name="uq_campaigns_client_ref"),
    )


class CampaignRecipient(Base):
    __tablename__ = "campaign_recipients"

    campaign_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    lang: Mapped[str] = mapped_column(String(5))
    status: Mapped[str] = mapped_column(String(10))
    error: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    sent_at: Mapped[datetime | None]
