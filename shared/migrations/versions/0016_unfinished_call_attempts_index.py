"""Unfinished call attempts, indexed for reconciliation with Twilio (issue 12).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03

Every callcenter replica sweeps the attempts not yet in a final state every
30 s (services/callcenter/calls/reconcile.py). They are few (the calls live
now, and any whose end never reached us) among every attempt ever made, so a
partial index over them keeps the sweep from scanning the whole table.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# The final states of services/callcenter/calls/models.py (FINAL_STATES): a migration keeps its own copy.
UNFINISHED = ("status NOT IN ('completed', 'busy', 'no-answer', 'failed', 'canceled', 'skipped', 'uncertain')")


def upgrade() -> None:
    op.create_index("ix_call_attempts_unfinished", "call_attempts", ["created_at"],
                    postgresql_where=sa.text(UNFINISHED))


def downgrade() -> None:
    op.drop_index("ix_call_attempts_unfinished", table_name="call_attempts")
