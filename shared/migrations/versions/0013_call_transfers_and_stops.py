"""Live transfers (key 2) and stop orders (an acknowledgement stops all contact), callcenter side.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

- call_stops: each StopCalls order the callcenter received, so a call being
  placed when it arrives is cancelled as soon as Twilio names it, and a
  PlaceCall job that runs after it places no call.
- call_attempts.stop_requested_at: set before Twilio is asked to cancel, so
  the status callback that follows reports "stopped", never "canceled".
- call_transfers: key 2 on an automated call: the seats rung (reserved while
  they ring), who answered and when, the operator call the seat took, the outcome.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("call_attempts", sa.Column("stop_requested_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "call_stops",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("task_id", sa.UUID(), nullable=False),
        sa.Column("reason", sa.String(length=24), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=True),
        sa.Column("except_attempt", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("calls_stopped", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_stops")),
        sa.UniqueConstraint("task_id", "reason", "decided_at", name="uq_call_stops_task_reason_decided"),
    )
    op.create_table(
        "call_transfers",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("attempt_id", sa.BigInteger(), nullable=False),
        sa.Column("task_id", sa.UUID(), nullable=False),
        sa.Column("lang", sa.String(length=5), server_default="zh", nullable=False),
        sa.Column("unit", sa.String(length=12), nullable=False),
        sa.Column("seats", postgresql.ARRAY(sa.String(length=16)), server_default="{}", nullable=False),
        sa.Column("ringing_seats", postgresql.ARRAY(sa.String(length=16)), server_default="{}", nullable=False),
        sa.Column("legs", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("rounds", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pressed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ring_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_by", sa.String(length=16), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("leg_sid", sa.String(length=40), nullable=True),
        sa.Column("claimed_job_id", sa.BigInteger(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["attempt_id"], ["call_attempts.id"],
                                name=op.f("fk_call_transfers_attempt_id_call_attempts"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_transfers")),
        sa.UniqueConstraint("attempt_id", name=op.f("uq_call_transfers_attempt_id")),
    )
    op.create_index("ix_call_transfers_ringing", "call_transfers", ["ring_until"],
                    postgresql_where=sa.text("outcome = 'ringing'"))
    op.create_index("ix_call_transfers_unclaimed", "call_transfers", ["answered_at"],
                    postgresql_where=sa.text("answered_by IS NOT NULL AND claimed_job_id IS NULL"))
    op.create_index("ix_call_transfers_answered_by", "call_transfers", ["answered_by", "answered_at"])


def downgrade() -> None:
    op.drop_index("ix_call_transfers_answered_by", table_name="call_transfers")
    op.drop_index("ix_call_transfers_unclaimed", table_name="call_transfers")
    op.drop_index("ix_call_transfers_ringing", table_name="call_transfers")
    op.drop_table("call_transfers")
    op.drop_table("call_stops")
    op.drop_column("call_attempts", "stop_requested_at")
