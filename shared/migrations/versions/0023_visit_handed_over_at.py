"""When an open visit was handed to another unit: visits.handed_over_at.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04

- visits.handed_over_at: a supervisor handed the task (and so its visit nobody had taken) to another unit.
  The new unit's officers get the visit's full claim time from this moment (visit_claim_within_minutes);
  requested_at keeps when the visit was first asked for.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("visits", sa.Column("handed_over_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("visits", "handed_over_at")
