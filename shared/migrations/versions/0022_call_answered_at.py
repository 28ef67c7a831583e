"""When a call was answered: call_attempts.answered_at (issue 14, seat work: the desk's call timer).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03

- call_attempts.answered_at: the first "in-progress" status of the call (for click-to-call, the seat's own
  phone picked up). The operator desk's call timer runs from it while the call is live; updated_at cannot
  serve, as later callbacks (the bridged leg's end) move it.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("call_attempts", sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("call_attempts", "answered_at")
