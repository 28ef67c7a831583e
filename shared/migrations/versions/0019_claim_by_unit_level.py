"""A seat's claim is one index probe on (unit, urgency, deadline), not a sort (issue 13).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03

A seat claimed with `scope LIKE '<unit>%'` over ix_jobs_scoped_ready
(queue, priority, due_at, id): the index gives the order, but the LIKE is a
filter, so a seat walked the whole queue in order until it met one of its own
jobs: about 1 / (its unit's share of the queue) entries, each with a heap
visit, and the whole queue when nothing of its unit waits (a quiet district's
"next" that answers 204 read every queued job of the province).

- jobs.scope_province / scope_city / scope_district: the scope's prefix at each
  unit level (2, 4, 6 characters), NULL when the scope is shorter than the
  level (a city-scoped job has no district). Stored generated columns, so
  every writer of `scope` (enqueue, update_task_jobs) keeps them right in the
  same statement, with no code to forget.
- One partial index per level on (queue, <level>, priority, due_at, id, run_at)
  over the queued jobs that have that level: a seat of unit U (length 2, 4 or
  6) reads `<level> = U ORDER BY priority, due_at, id LIMIT 1` straight off
  it. run_at last is not for the order: it makes `run_at <= now` an index
  condition, so jobs that wait (a callback at an agreed hour, an operator call
  held for a live transfer) are stepped over inside the index, not by a heap
  visit each (1,000 waiting emergencies ahead: 13 buffers instead of 1,014).
- ix_jobs_scoped_ready is dropped (every claim by people now uses a level
  index); the downgrade builds it again.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

LEVELS = (("scope_province", 2), ("scope_city", 4), ("scope_district", 6))


def upgrade() -> None:
    for column, width in LEVELS:
        op.add_column("jobs", sa.Column(column, sa.String(length=width), sa.Computed(
            f"CASE WHEN length(scope) >= {width} THEN left(scope, {width}) END", persisted=True), nullable=True))
        op.create_index(f"ix_jobs_claim_{column.removeprefix('scope_')}", "jobs",
                        ["queue", column, "priority", "due_at", "id", "run_at"],
                        postgresql_where=sa.text(f"status = 'queued' AND {column} IS NOT NULL"))
    op.drop_index("ix_jobs_scoped_ready", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_scoped_ready", "jobs", ["queue", "priority", "due_at", "id"],
                    postgresql_where=sa.text("status = 'queued' AND scope IS NOT NULL"))
    for column, _ in reversed(LEVELS):
        op.drop_index(f"ix_jobs_claim_{column.removeprefix('scope_')}", table_name="jobs")
        op.drop_column("jobs", column)
