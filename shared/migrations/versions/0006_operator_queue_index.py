"""An index on exactly the seat operators' queue.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21

Claiming the next task (services/callcenter/seats/service.py: claim_next) looks
only at queued "call.operator" jobs; without this index it walked every queued
job of the callcenter queue, automated-call jobs included, on every claim.
"""
from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_jobs_operator_queue ON jobs (run_at, task_id)"
        " WHERE queue = 'callcenter' AND kind = 'call.operator' AND status = 'queued'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_jobs_operator_queue")
