"""Field visits (见面处置).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

- visits: one per in-person visit of a task, owned by the unit that works the
  task; open -> claimed -> reported, or cancelled when the task closes first.
  A partial unique index keeps at most one live (open or claimed) visit per
  task; (task_id, request_attempt) makes the plan's visit.request job create
  its visit once; report_key holds the report's Idempotency-Key.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "visits",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("task_id", sa.UUID(), nullable=False),
        sa.Column("case_id", sa.UUID(), nullable=False),
        sa.Column("unit", sa.String(length=6), nullable=False),
        sa.Column("region_code", sa.String(length=6), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("request_attempt", sa.Integer(), nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("claimed_key_id", sa.String(length=16), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("report_note", sa.Text(), nullable=True),
        sa.Column("met_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("report_key", sa.String(length=128), nullable=True),
        sa.Column("task_action", sa.String(length=20), nullable=True),
        sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_visits_task_id_tasks")),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_visits_case_id_cases")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visits")),
        sa.UniqueConstraint("task_id", "request_attempt", name="uq_visits_request_attempt"),
    )
    op.create_index("ux_visits_live_task", "visits", ["task_id"], unique=True,
                    postgresql_where=sa.text("status IN ('open', 'claimed')"))
    op.create_index("ix_visits_unit_live", "visits", ["unit"], postgresql_ops={"unit": "text_pattern_ops"},
                    postgresql_where=sa.text("status IN ('open', 'claimed')"))
    op.create_index("ix_visits_claimed_key", "visits", ["claimed_key_id", "reported_at"])


def downgrade() -> None:
    op.drop_table("visits")
