"""bot chats, deliveries and clues

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 09:47:54.409455
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('bot_chats',
    sa.Column('chat_id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=True),
    sa.Column('lang', sa.String(length=5), server_default='zh', nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('chat_id', name=op.f('pk_bot_chats'))
    )
    op.create_table('bot_deliveries',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('task_id', sa.UUID(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('chat_id', sa.BigInteger(), nullable=False),
    sa.Column('lang', sa.String(length=5), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('message_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('feedback', sa.String(length=20), nullable=True),
    sa.Column('feedback_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bot_deliveries')),
    sa.UniqueConstraint('task_id', 'attempt', 'chat_id', name='uq_bot_deliveries_attempt_chat')
    )
    op.create_index('ix_bot_deliveries_chat_task', 'bot_deliveries', ['chat_id', 'task_id'], unique=False)
    op.create_table('clues',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('ref', sa.String(length=24), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('channel', sa.String(length=20), nullable=False),
    sa.Column('reporter_chat_id', sa.BigInteger(), nullable=True),
    sa.Column('reporter_phone', sa.String(length=20), nullable=True),
    sa.Column('region_code', sa.String(length=6), nullable=True),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('reported_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clues')),
    sa.UniqueConstraint('ref', name=op.f('uq_clues_ref'))
    )
    op.create_index('ix_clues_region', 'clues', ['region_code', 'reported_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_clues_region', table_name='clues')
    op.drop_table('clues')
    op.drop_index('ix_bot_deliveries_chat_task', table_name='bot_deliveries')
    op.drop_table('bot_deliveries')
    op.drop_table('bot_chats')
