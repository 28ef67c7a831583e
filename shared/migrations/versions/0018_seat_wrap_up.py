"""Seat wrap-up with an end: seats.wrap_up_until (issue 14, desk-phone seats and wrap-up).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03

- seats.wrap_up_until: when a seat in `wrap_up` becomes available again. Set at a disposition (now plus
  SHOUHU_SEAT_WRAP_UP_S) and when a transferred citizen's call ends (time to record the disposition), so no seat
  stays in wrap-up for ever: reads and a sweep turn a seat whose wrap-up is over back to available.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("seats", sa.Column("wrap_up_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("seats", "wrap_up_until")
