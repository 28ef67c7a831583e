"""The bot's dialogue state (aiogram FSM storage) in PostgreSQL (issue 13).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03

- bot_dialogues: one row per aiogram StorageKey with the dialogue's state and
  data, so a bot restart or another replica continues a half-written /report.
  updated_at lets reads ignore, and a sweep delete, dialogues left unfinished.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bot_dialogues",
        sa.Column("bot_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("thread_id", sa.BigInteger(), nullable=False),
        sa.Column("business_connection_id", sa.String(length=64), nullable=False),
        sa.Column("destiny", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=128), nullable=True),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("bot_id", "chat_id", "user_id", "thread_id", "business_connection_id", "destiny",
                                name=op.f("pk_bot_dialogues")),
    )
    op.create_index("ix_bot_dialogues_updated_at", "bot_dialogues", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_bot_dialogues_updated_at", table_name="bot_dialogues")
    op.drop_table("bot_dialogues")
