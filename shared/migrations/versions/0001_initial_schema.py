"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Beyond the tables: the audit log refuses UPDATE and DELETE (append-only), the
chain head starts at the genesis hash, and the jobs table is vacuumed eagerly
(a queue table churns: every row is inserted and deleted within minutes).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('secret_sha256', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('unit', sa.String(length=6), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_id', name=op.f('uq_api_keys_key_id'))
    )
    op.create_table('audit_chain_head',
    sa.Column('id', sa.SmallInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_audit_chain_head_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_chain_head'))
    )
    op.create_table('audit_log',
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('task_id', sa.UUID(), nullable=True),
    sa.Column('case_id', sa.UUID(), nullable=True),
    sa.Column('region_code', sa.String(length=6), nullable=True),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_audit_log'))
    )
    op.create_index('ix_audit_log_at', 'audit_log', ['at'], unique=False, postgresql_using='brin')
    op.create_index('ix_audit_log_case_id', 'audit_log', ['case_id', 'seq'], unique=False)
    op.create_index('ix_audit_log_task_id', 'audit_log', ['task_id', 'seq'], unique=False)
    op.create_table('cases',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('tier', sa.String(length=6), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('warning_count', sa.Integer(), nullable=False),
    sa.Column('first_warning_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_warning_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cases'))
    )
    op.create_index('ix_cases_phone', 'cases', ['phone'], unique=False)
    op.create_index('ux_cases_open_phone', 'cases', ['phone'], unique=True, postgresql_where=sa.text("status = 'open'"))
    op.create_table('chat_bindings',
    sa.Column('chat_id', sa.BigInteger(), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=True),
    sa.Column('lang', sa.String(length=5), server_default='zh', nullable=False),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('bound_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('chat_id', name=op.f('pk_chat_bindings'))
    )
    op.create_index('ix_chat_bindings_active_phone', 'chat_bindings', ['phone'], unique=False, postgresql_where=sa.text('active'))
    op.create_table('jobs',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('queue', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('priority', sa.SmallInteger(), server_default='100', nullable=False),
    sa.Column('run_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='queued', nullable=False),
    sa.Column('attempts', sa.SmallInteger(), server_default='0', nullable=False),
    sa.Column('max_attempts', sa.SmallInteger(), server_default='10', nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('locked_by', sa.String(length=128), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('dedupe_key', sa.String(length=200), nullable=True),
    sa.Column('task_id', sa.UUID(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    op.create_index('ix_jobs_leased', 'jobs', ['lease_expires_at'], unique=False, postgresql_where=sa.text("status = 'running'"))
    op.create_index('ix_jobs_queued_task', 'jobs', ['task_id'], unique=False, postgresql_where=sa.text("status = 'queued'"))
    op.create_index('ix_jobs_ready', 'jobs', ['queue', 'priority', 'run_at'], unique=False, postgresql_where=sa.text("status = 'queued'"))
    op.create_index('ux_jobs_live_dedupe', 'jobs', ['dedupe_key'], unique=True, postgresql_where=sa.text("dedupe_key IS NOT NULL AND status IN ('queued', 'running')"))
    op.create_table('policy_versions',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('content', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_policy_versions'))
    )
    op.create_table('tasks',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('case_id', sa.UUID(), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('fraud_type', sa.String(length=32), nullable=False),
    sa.Column('tier', sa.String(length=6), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('outcome', sa.String(length=20), nullable=True),
    sa.Column('policy_version', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('plan_started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('plan_seq', sa.Integer(), server_default='1', nullable=False),
    sa.Column('steps_done', sa.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('breached', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('breached_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('escalated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('emergency_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reached_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('has_chat', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('attempts', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_by', sa.String(length=200), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_tasks_case_id_cases')),
    sa.ForeignKeyConstraint(['policy_version'], ['policy_versions.id'], name=op.f('fk_tasks_policy_version_policy_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks')),
    sa.UniqueConstraint('case_id', name=op.f('uq_tasks_case_id'))
    )
    op.create_index('ix_tasks_live_due', 'tasks', ['due_at'], unique=False, postgresql_where=sa.text("status <> 'closed'"))
    op.create_index('ix_tasks_region', 'tasks', ['region_code', 'id'], unique=False, postgresql_ops={'region_code': 'text_pattern_ops'})
    op.create_table('warnings',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('source_ref', sa.String(length=128), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('fraud_type', sa.String(length=32), nullable=False),
    sa.Column('signal', sa.String(length=32), nullable=False),
    sa.Column('region_code', sa.String(length=6), nullable=False),
    sa.Column('amount_at_risk', sa.Numeric(precision=16, scale=2), nullable=True),
    sa.Column('risk_score', sa.SmallInteger(), nullable=True),
    sa.Column('subject', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('details', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('case_id', sa.UUID(), nullable=False),
    sa.Column('task_id', sa.UUID(), nullable=False),
    sa.Column('tier', sa.String(length=6), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reasons', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('merged', sa.Boolean(), nullable=False),
    sa.Column('notices', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('ingested_by', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_warnings_case_id_cases')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_warnings_task_id_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_warnings')),
    sa.UniqueConstraint('source', 'source_ref', name='uq_warnings_source_ref')
    )
    op.create_index('ix_warnings_case_id', 'warnings', ['case_id'], unique=False)
    op.execute("INSERT INTO audit_chain_head (id, seq, hash) VALUES (1, 0, repeat('0', 64))")
    op.execute(
        """
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
    )
    op.execute(
        "ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000, "
        "autovacuum_vacuum_cost_delay = 0, fillfactor = 80)"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
    op.execute("DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log")
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.drop_index('ix_warnings_case_id', table_name='warnings')
    op.drop_table('warnings')
    op.drop_index('ix_tasks_region', table_name='tasks', postgresql_ops={'region_code': 'text_pattern_ops'})
    op.drop_index('ix_tasks_live_due', table_name='tasks', postgresql_where=sa.text("status <> 'closed'"))
    op.drop_table('tasks')
    op.drop_table('policy_versions')
    op.drop_index('ux_jobs_live_dedupe', table_name='jobs', postgresql_where=sa.text("dedupe_key IS NOT NULL AND status IN ('queued', 'running')"))
    op.drop_index('ix_jobs_ready', table_name='jobs', postgresql_where=sa.text("status = 'queued'"))
    op.drop_index('ix_jobs_queued_task', table_name='jobs', postgresql_where=sa.text("status = 'queued'"))
    op.drop_index('ix_jobs_leased', table_name='jobs', postgresql_where=sa.text("status = 'running'"))
    op.drop_table('jobs')
    op.drop_index('ix_chat_bindings_active_phone', table_name='chat_bindings', postgresql_where=sa.text('active'))
    op.drop_table('chat_bindings')
    op.drop_index('ux_cases_open_phone', table_name='cases', postgresql_where=sa.text("status = 'open'"))
    op.drop_index('ix_cases_phone', table_name='cases')
    op.drop_table('cases')
    op.drop_index('ix_audit_log_task_id', table_name='audit_log')
    op.drop_index('ix_audit_log_case_id', table_name='audit_log')
    op.drop_index('ix_audit_log_at', table_name='audit_log', postgresql_using='brin')
    op.drop_table('audit_log')
    op.drop_table('audit_chain_head')
    op.drop_table('api_keys')
