"""Persuasion tasks: the work of reaching one person before the deadline, closed by an outcome."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, Boolean, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

OPEN = "open"
IN_PROGRESS = "in_progress"
CLOSED = "closed"

OUTCOMES = ("acknowledged", "dissuaded", "loss_reported", "unreachable", "false_positive", "refused")


class Task(Base):
    __tablename__ = "tasks"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # One task per case: the case is the person's open file, the task the work on it.
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id"), unique=True)
    phone: Mapped[str] = mapped_column(String(20))
    region_code: Mapped[str] = mapped_column(String(6))
    fraud_type: Mapped[str] = mapped_column(String(32))
    tier: Mapped[str] = mapped_column(String(6))
    status: Mapped[str] = mapped_column(String(12))
    outcome: Mapped[str | None] = mapped_column(String(20))
    # The policy version whose playbook this task follows (the snapshot).
    policy_version: Mapped[str] = mapped_column(String(16), ForeignKey("policy_versions.id"))
    created_at: Mapped[datetime]
    # The current plan: started when the task opened or its tier was last raised.
    plan_started_at: Mapped[datetime]
    plan_seq: Mapped[int] = mapped_column(Integer, server_default="1")
    steps_done: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    due_at: Mapped[datetime]
    breached: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    breached_at: Mapped[datetime | None]
    escalated_at: Mapped[datetime | None]
    emergency_at: Mapped[datetime | None]   # loss reported: payment stop requested
    reached_at: Mapped[datetime | None]     # first time a person answered or pressed a button
    has_chat: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # Attempts made per channel ({"auto_call": 2}); numbers each attempt for idempotency.
    attempts: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    # Handed to another unit by a supervisor (its seats and supervisors see the task too); None: region_code's.
    assigned_unit: Mapped[str | None] = mapped_column(String(6))
    reassigned_at: Mapped[datetime | None]  # the supervisor's last decision on it (escalation queue)

    __table_args__ = (
        Index("ix_tasks_region", "region_code", "id", postgresql_ops={"region_code": "text_pattern_ops"}),
        Index("ix_tasks_live_due", "due_at", postgresql_where=text("status <> 'closed'")),
        Index("ix_tasks_assigned_unit", "assigned_unit", postgresql_ops={"assigned_unit": "text_pattern_ops"},
              postgresql_where=text("assigned_unit IS NOT NULL")),  # migration 0007
        Index("ix_tasks_due_region", "due_at", "region_code",
              postgresql_ops={"region_code": "text_pattern_ops"}),  # migration 0008: reports by unit and period
    )
