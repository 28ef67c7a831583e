"""call attempts and do-not-call list

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 10:06:09.462308
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('call_attempts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('task_id', sa.UUID(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('to_number', sa.String(length=20), nullable=False),
    sa.Column('from_number', sa.String(length=20), nullable=False),
    sa.Column('lang', sa.String(length=5), server_default='zh', nullable=False),
    sa.Column('call_sid', sa.String(length=40), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('answered_by', sa.String(length=24), nullable=True),
    sa.Column('digits', sa.String(length=32), nullable=True),
    sa.Column('outcome', sa.String(length=24), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('duration_s', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_call_attempts')),
    sa.UniqueConstraint('call_sid', name=op.f('uq_call_attempts_call_sid')),
    sa.UniqueConstraint('task_id', 'channel', 'attempt', name='uq_call_attempts_task_channel_attempt')
    )
    op.create_index('ix_call_attempts_to_created', 'call_attempts', ['to_number', 'created_at'], unique=False)
    op.create_table('do_not_call',
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('added_by', sa.String(length=200), nullable=False),
    sa.Column('added_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('phone', name=op.f('pk_do_not_call'))
    )


def downgrade() -> None:
    op.drop_table('do_not_call')
    op.drop_index('ix_call_attempts_to_created', table_name='call_attempts')
    op.drop_table('call_attempts')
