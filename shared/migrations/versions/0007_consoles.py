"""Web consoles: sign-in sessions, task reassignment, the clue mailbox's workflow.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21

- console_sessions: a signed-in browser (cookie token stored as its SHA-256),
  bound to one API key and one service; sign-out deletes the row, so a stolen
  cookie dies with it, and a revoked key ends its sessions at once.
- tasks.assigned_unit: a supervisor may hand a task to another unit inside
  their jurisdiction; that unit's seats and supervisors then see it too.
- clues: routed to a unit, answered within a time limit (answer_due_at), closed.
"""
from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE console_sessions (
            token_sha256 char(64) PRIMARY KEY,
            service varchar(16) NOT NULL,
            key_id varchar(16) NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
            csrf_token varchar(64) NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL
        )""")
    op.execute("CREATE INDEX ix_console_sessions_key ON console_sessions (key_id)")
    op.execute("ALTER TABLE tasks ADD COLUMN assigned_unit varchar(6), ADD COLUMN reassigned_at timestamptz")
    op.execute("CREATE INDEX ix_tasks_assigned_unit ON tasks (assigned_unit text_pattern_ops)"
               " WHERE assigned_unit IS NOT NULL")
    op.execute("ALTER TABLE clues ADD COLUMN routed_at timestamptz, ADD COLUMN routed_by varchar(200),"
               " ADD COLUMN answer_due_at timestamptz, ADD COLUMN answer text, ADD COLUMN answered_at timestamptz,"
               " ADD COLUMN answered_by varchar(200), ADD COLUMN closed_at timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE clues DROP COLUMN routed_at, DROP COLUMN routed_by, DROP COLUMN answer_due_at,"
               " DROP COLUMN answer, DROP COLUMN answered_at, DROP COLUMN answered_by, DROP COLUMN closed_at")
    op.execute("DROP INDEX IF EXISTS ix_tasks_assigned_unit")
    op.execute("ALTER TABLE tasks DROP COLUMN assigned_unit, DROP COLUMN reassigned_at")
    op.execute("DROP TABLE console_sessions")
