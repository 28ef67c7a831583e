"""Field visits (见面处置): officers or grid workers of the task's district go and meet the citizen.

A visit belongs to one task and to the unit that works the task (the unit a
supervisor handed it to, else the citizen's district). Its life:

    open --claim--> claimed --report--> reported
      \\________________\\____task closed____> cancelled

At most one visit of a task is live (open or claimed) at a time: a partial
unique index, so a timer's request and an operator's racing for one task
cannot make two. Its deadline is the task's (read from the task, which a tier
raise may pull in), so it is not copied here.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

OPEN = "open"          # waiting for an officer of the unit to take it
CLAIMED = "claimed"    # an officer is on the way
REPORTED = "reported"  # the officer reported the outcome (feedback to the task)
CANCELLED = "cancelled"  # the task closed by another path before anyone reported
LIVE = (OPEN, CLAIMED)
STATUSES = (OPEN, CLAIMED, REPORTED, CANCELLED)


class Visit(Base):
    __tablename__ = "visits"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    task_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tasks.id"))
    case_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cases.id"))
    # Whose officers go (a region-code prefix matched by keys' units) and the citizen's region (for the audit log).
    unit: Mapped[str] = mapped_column(String(6))
    region_code: Mapped[str] = mapped_column(String(6))
    status: Mapped[str] = mapped_column(String(10))
    requested_by: Mapped[str] = mapped_column(String(200))  # "system:timer" (the plan) or the operator's key
    requested_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text)  # why, or what the requester knows ("she is at the bank now")
    # The plan's visit.request attempt that made it (None: requested by a person).
    request_attempt: Mapped[int | None]
    claimed_by: Mapped[str | None] = mapped_column(String(200))  # the officer's audit actor (key:<id>:<name>)
    claimed_key_id: Mapped[str | None] = mapped_column(String(16))
    claimed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(20))
    report_note: Mapped[str | None] = mapped_column(Text)
    met_at: Mapped[datetime | None]       # when the officer met the citizen (not_found: None)
    reported_at: Mapped[datetime | None]
    # The report's Idempotency-Key: the same key again answers the same result; another key is a conflict.
    report_key: Mapped[str | None] = mapped_column(String(128))
    # What the report did to the task ("closed", "emergency", "escalated"), so a replay answers the same.
    task_action: Mapped[str | None] = mapped_column(String(20))
    escalated_at: Mapped[datetime | None]  # untaken in time, or still live at the deadline: sent to a supervisor
    handed_over_at: Mapped[datetime | None]  # untaken, moved to another unit with its task (service.hand_over_open)
    cancelled_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ux_visits_live_task", "task_id", unique=True,
              postgresql_where=text("status IN ('open', 'claimed')")),
        # An officer's list: the live visits of the unit (text_pattern_ops: unit LIKE '3301%').
        Index("ix_visits_unit_live", "unit", postgresql_ops={"unit": "text_pattern_ops"},
              postgresql_where=text("status IN ('open', 'claimed')")),
        Index("ix_visits_claimed_key", "claimed_key_id", "reported_at"),
        UniqueConstraint("task_id", "request_attempt", name="uq_visits_request_attempt"),
    )
