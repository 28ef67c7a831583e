"""Emergencies: a payment-stop request (保护性止付) per emergency, with its own lifecycle.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04

- payment_stops: one per task that became an emergency (a loss reported),
  requested -> sent -> confirmed | failed, with what the citizen said about the
  transfer, the amount stopped and the bank's reference.
- Open emergencies get their request now (status requested), taking who
  reported the loss from the "payment_stop.request" job start_emergency used to
  queue on a "liaison" queue nobody read; those jobs are dropped.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_stops",
        sa.Column("task_id", sa.UUID(), nullable=False),
        sa.Column("case_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reported_by", sa.String(length=200), nullable=False),
        sa.Column("reported_via", sa.String(length=12), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("bank", sa.String(length=100), nullable=True),
        sa.Column("account", sa.String(length=64), nullable=True),
        sa.Column("amount_lost_cny", sa.Numeric(16, 2), nullable=True),
        sa.Column("transferred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("amount_stopped_cny", sa.Numeric(16, 2), nullable=True),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_by", sa.String(length=200), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_by", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_payment_stops_task_id_tasks")),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_payment_stops")),
    )
    op.create_index("ix_payment_stops_open", "payment_stops", ["requested_at"], unique=False,
                    postgresql_where=sa.text("status IN ('requested', 'sent')"))
    op.execute(
        "INSERT INTO payment_stops (task_id, case_id, status, reported_by, reported_via, requested_at, note,"
        " updated_at, updated_by)"
        " SELECT t.id, t.case_id, 'requested', COALESCE(j.payload->>'reported_by', 'system:migration'), 'feedback',"
        " t.emergency_at, j.payload->>'note', t.emergency_at, 'system:migration'"
        " FROM tasks t LEFT JOIN LATERAL (SELECT payload FROM jobs WHERE jobs.task_id = t.id"
        "   AND jobs.kind = 'payment_stop.request' ORDER BY jobs.id DESC LIMIT 1) j ON true"
        " WHERE t.emergency_at IS NOT NULL AND t.status <> 'closed'")
    op.execute("DELETE FROM jobs WHERE queue = 'liaison' AND kind = 'payment_stop.request'")


def downgrade() -> None:
    op.drop_index("ix_payment_stops_open", table_name="payment_stops",
                  postgresql_where=sa.text("status IN ('requested', 'sent')"))
    op.drop_table("payment_stops")
