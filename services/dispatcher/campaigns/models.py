"""Campaigns: what is sent to which segment, when, and how far it has got.

A campaign is owned by the unit of the key that made it and targets a region
prefix inside that unit. When it starts, the dispatcher picks its recipients
once and hands them to the bot in chunks (shared.contracts.CampaignChunk); the
bot keeps one delivery row per chat (services/bot/campaigns/models.py), whose
primary key is what makes "nobody gets the same campaign twice" hold.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

# Campaign lifecycle. No drafts: the console previews the count before it schedules,
# and a campaign that should not go out is cancelled.
SCHEDULED = "scheduled"  # waiting for send_at; its "campaign.start" job is queued
SENDING = "sending"  # recipients materialised, bot jobs queued or running
DONE = "done"  # every recipient has a final status
CANCELLED = "cancelled"
LIVE = (SCHEDULED, SENDING)

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
    # How many it was handed to the bot for (the delivery counts are the bot's: campaign_delivery_counts).
    total: Mapped[int] = mapped_column(Integer, server_default="0")

    __table_args__ = (
        Index("ix_campaigns_region", "region_prefix", "created_at", postgresql_ops={"region_prefix": "text_pattern_ops"}),
        UniqueConstraint("created_by", "client_ref", name="uq_campaigns_client_ref"),
    )

