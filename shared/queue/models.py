"""The jobs table: one row per unit of work a service must do, done rows deleted."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Computed, Identity, Index, SmallInteger, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

# Job lifecycle. Finished jobs are deleted in the transaction that finishes them
# (the domain tables keep the history), so the table only holds live work and
# dead letters, and stays small enough for autovacuum to keep up.
QUEUED = "queued"
RUNNING = "running"
FAILED = "failed"  # dead letter: gave up after max_attempts; kept for a person to look at
CANCELLED = "cancelled"


# Unit levels a seat's unit can have, by its length: the generated column and index that answer its claim.
LEVEL_COLUMNS = {2: "scope_province", 4: "scope_city", 6: "scope_district"}


def _level(width: int) -> str:
    return f"CASE WHEN length(scope) >= {width} THEN left(scope, {width}) END"


def _claim_index(column: str) -> Index:
    # One probe per claim: equality on the level, then already in claim order (emergency, tier, deadline);
    # run_at last makes "runnable now" an index condition, so waiting jobs are skipped without heap visits.
    return Index(f"ix_jobs_claim_{column.removeprefix('scope_')}", "queue", column, "priority", "due_at", "id", "run_at",
                 postgresql_where=text(f"status = 'queued' AND {column} IS NOT NULL"))


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # The consumer that runs it: "dispatcher", "bot", "callcenter", "visit".
    queue: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    # Lower runs first (0 = emergency).
    priority: Mapped[int] = mapped_column(SmallInteger, server_default="100")
    run_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(16), server_default=QUEUED)
    attempts: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    max_attempts: Mapped[int] = mapped_column(SmallInteger, server_default="10")
    lease_expires_at: Mapped[datetime | None]
    locked_by: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    # The task this job works for: closing a task cancels its queued contact jobs.
    task_id: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # Jobs people claim (the seat operators' queue): the unit whose seats may take it (a region-code
    # prefix match) and the deadline that orders it after its priority. NULL for worker-run jobs.
    scope: Mapped[str | None] = mapped_column(String(12))
    due_at: Mapped[datetime | None]
    # The scope at each unit level (province 2, city 4, district 6 characters; NULL when the scope is
    # shorter), computed by PostgreSQL whenever scope is written: a seat's claim is an equality on its
    # level's column and reads its level's index in order (shared.queue.service.claim), migration 0019.
    scope_province: Mapped[str | None] = mapped_column(String(2), Computed(_level(2), persisted=True))
    scope_city: Mapped[str | None] = mapped_column(String(4), Computed(_level(4), persisted=True))
    scope_district: Mapped[str | None] = mapped_column(String(6), Computed(_level(6), persisted=True))

    __table_args__ = (
        Index("ix_jobs_ready", "queue", "priority", "run_at", postgresql_where=text("status = 'queued'")),
        Index("ix_jobs_leased", "lease_expires_at", postgresql_where=text("status = 'running'")),
        Index(
            "ux_jobs_live_dedupe",
            "dedupe_key",
            unique=True,
            postgresql_where=text("dedupe_key IS NOT NULL AND status IN ('queued', 'running')"),
        ),
        Index("ix_jobs_queued_task", "task_id", postgresql_where=text("status = 'queued'")),
        # Claims by people (shared.queue.service.claim with a scope_prefix), migration 0019.
        *(_claim_index(column) for column in LEVEL_COLUMNS.values()),
        # What a seat holds (shared.queue.service.held).
        Index("ix_jobs_locked_by", "locked_by", postgresql_where=text("status = 'running'")),
    )
