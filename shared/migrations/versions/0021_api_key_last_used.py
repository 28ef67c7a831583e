"""When each API key was last used: api_keys.last_used_at (issue 14, key management page).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03

- api_keys.last_used_at: written by the key cache when a key authenticates, at most once a minute per key and
  process (shared/auth/service.py, LAST_USED_EVERY_S), so an admin can tell a key in use from a forgotten one
  without a write per request.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("api_keys", "last_used_at")
