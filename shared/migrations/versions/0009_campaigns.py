"""Targeted publicity campaigns (精准宣防).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21

- campaigns: one per scheduled message to a segment, scoped by region_prefix,
  with delivery counters (the progress bar reads one row).
- campaign_recipients: one row per chat per campaign; the primary key
  (campaign_id, chat_id) is the "never the same campaign twice" guarantee.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("unit", sa.String(length=6), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("segment", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("region_prefix", sa.String(length=6), nullable=False),
        sa.Column("template", sa.String(length=40), nullable=True),
        sa.Column("lang", sa.String(length=5), nullable=True),
        sa.Column("texts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("client_ref", sa.String(length=64), nullable=True),
        sa.Column("preview_count", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_by", sa.String(length=200), nullable=True),
        sa.Column("total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("blocked", sa.Integer(), server_default="0", nullable=False),
        sa.Column("uncertain", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("created_by", "client_ref", name="uq_campaigns_client_ref"),
    )
    op.create_index("ix_campaigns_region", "campaigns", ["region_prefix", "created_at"], unique=False,
                    postgresql_ops={"region_prefix": "text_pattern_ops"})
    op.create_table(
        "campaign_recipients",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("lang", sa.String(length=5), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("message_id", sa.BigInteger(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"],
                                name=op.f("fk_campaign_recipients_campaign_id_campaigns"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaign_id", "chat_id", name=op.f("pk_campaign_recipients")),
    )


def downgrade() -> None:
    op.drop_table("campaign_recipients")
    op.drop_index("ix_campaigns_region", table_name="campaigns")
    op.drop_table("campaigns")
