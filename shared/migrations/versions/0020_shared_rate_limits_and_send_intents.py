"""Rate limits shared by every replica, and send intents on the bot's alert deliveries (issue 13).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03

- rate_tokens: N token rows per bucket (Telegram: 30 per bot), each free once
  busy_until (database clock) has passed; holder guards late releases.
- rate_turns: one row per key (a chat's turn), swept when long idle.
- rate_paces: the next free start per key (a Twilio account's calls).
- bot_deliveries.tries / intent_at: each request's intent, committed before it
  goes, so a rerun after a crash knows which alerts may be on their way.
The services' role is granted the new tables by `shouhu migrate`'s last step
(shared/db_roles.py grants every table of the schema).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_tokens",
        sa.Column("bucket", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.SmallInteger(), nullable=False),
        sa.Column("busy_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holder", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("bucket", "slot", name=op.f("pk_rate_tokens")),
    )
    op.create_table(
        "rate_turns",
        sa.Column("bucket", sa.String(length=64), nullable=False),
        sa.Column("key", sa.BigInteger(), nullable=False),
        sa.Column("busy_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("holder", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("bucket", "key", name=op.f("pk_rate_turns")),
    )
    op.create_index("ix_rate_turns_busy_until", "rate_turns", ["busy_until"])
    op.create_table(
        "rate_paces",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_paces")),
    )
    op.add_column("bot_deliveries", sa.Column("tries", sa.SmallInteger(), server_default="0", nullable=False))
    op.add_column("bot_deliveries", sa.Column("intent_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("bot_deliveries", "intent_at")
    op.drop_column("bot_deliveries", "tries")
    op.drop_table("rate_paces")
    op.drop_index("ix_rate_turns_busy_until", table_name="rate_turns")
    op.drop_table("rate_turns")
    op.drop_table("rate_tokens")
