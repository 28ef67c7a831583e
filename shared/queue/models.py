"""The jobs table: one row per unit of work a service must do, done rows deleted."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Index, SmallInteger, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from shared.models import Base

# Job lifecycle. Finished jobs are deleted in the transaction that finishes them
# (the domain tables keep the history), so the table only holds live work and
# dead letters, and stays small enough for autovacuum to keep up.
QUEUED = "queued"
RUNNING = "running"
FAILED = "failed"  # dead letter: gave up after max_attempts; kept for a person to look at
CANCELLED = "cancelled"


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
        # Claims by people (shared.queue.service.claim with a scope_prefix), migration 0010.
        Index("ix_jobs_scoped_ready", "queue", "priority", "due_at", "id",
              postgresql_where=text("status = 'queued' AND scope IS NOT NULL")),
        # What a seat holds (shared.queue.service.held).
        Index("ix_jobs_locked_by", "locked_by", postgresql_where=text("status = 'running'")),
    )
