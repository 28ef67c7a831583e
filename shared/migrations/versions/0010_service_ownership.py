"""Each service owns its tables; seats claim through the shared queue.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

- jobs.scope and jobs.due_at: the unit whose seats may claim a job and the
  deadline that orders it, so the seat claim is the shared queue's own claim
  (it joined the dispatcher's tasks table before). Waiting operator jobs are
  filled in from their tasks.
- bot_deliveries and call_attempts keep the task facts they need (fraud type,
  region, case) from the job that made them, instead of joining tasks.
- campaign_recipients becomes the bot's delivery record (no foreign key into
  the dispatcher's campaigns), with the bot's own counters in
  campaign_delivery_counts; the dispatcher's campaigns table keeps only the
  campaign and its status.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ---- the seat operators' queue through shared/queue --------------------------------------------------
    op.add_column("jobs", sa.Column("scope", sa.String(length=12), nullable=True))
    op.add_column("jobs", sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE jobs j SET scope = COALESCE(t.assigned_unit, t.region_code), due_at = t.due_at,"
        " priority = CASE WHEN j.priority = 0 THEN 0 WHEN t.tier = 'high' THEN 10 WHEN t.tier = 'medium' THEN 50"
        " ELSE 90 END"
        " FROM tasks t WHERE t.id = j.task_id AND j.kind = 'call.operator' AND j.status IN ('queued', 'running')")
    op.execute("DROP INDEX IF EXISTS ix_jobs_operator_queue")
    op.create_index("ix_jobs_scoped_ready", "jobs", ["queue", "priority", "due_at", "id"],
                    postgresql_where=sa.text("status = 'queued' AND scope IS NOT NULL"))
    op.create_index("ix_jobs_locked_by", "jobs", ["locked_by"], postgresql_where=sa.text("status = 'running'"))

    # ---- channels keep the task facts they were given ----------------------------------------------------
    op.add_column("bot_deliveries", sa.Column("fraud_type", sa.String(length=32), nullable=True))
    op.add_column("bot_deliveries", sa.Column("region_code", sa.String(length=6), nullable=True))
    op.add_column("bot_deliveries", sa.Column("case_id", sa.UUID(), nullable=True))
    op.execute("UPDATE bot_deliveries d SET fraud_type = t.fraud_type, region_code = t.region_code,"
               " case_id = t.case_id FROM tasks t WHERE t.id = d.task_id")
    op.add_column("call_attempts", sa.Column("fraud_type", sa.String(length=32), nullable=True))
    op.execute("UPDATE call_attempts a SET fraud_type = t.fraud_type FROM tasks t WHERE t.id = a.task_id")

    # ---- campaign delivery is the bot's ------------------------------------------------------------------
    op.drop_constraint("fk_campaign_recipients_campaign_id_campaigns", "campaign_recipients", type_="foreignkey")
    op.create_table(
        "campaign_delivery_counts",
        sa.Column("campaign_id", sa.UUID(), nullable=False),
        sa.Column("sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("blocked", sa.Integer(), server_default="0", nullable=False),
        sa.Column("uncertain", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", name=op.f("pk_campaign_delivery_counts")),
    )
    op.execute("INSERT INTO campaign_delivery_counts (campaign_id, sent, failed, blocked, uncertain)"
               " SELECT id, sent, failed, blocked, uncertain FROM campaigns")
    for column in ("sent", "failed", "blocked", "uncertain"):
        op.drop_column("campaigns", column)


def downgrade() -> None:
    for column in ("sent", "failed", "blocked", "uncertain"):
        op.add_column("campaigns", sa.Column(column, sa.Integer(), server_default="0", nullable=False))
    op.execute("UPDATE campaigns c SET sent = k.sent, failed = k.failed, blocked = k.blocked, uncertain = k.uncertain"
               " FROM campaign_delivery_counts k WHERE k.campaign_id = c.id")
    op.drop_table("campaign_delivery_counts")
    op.execute("DELETE FROM campaign_recipients r WHERE NOT EXISTS (SELECT 1 FROM campaigns c WHERE c.id = r.campaign_id)")
    op.create_foreign_key("fk_campaign_recipients_campaign_id_campaigns", "campaign_recipients", "campaigns",
                          ["campaign_id"], ["id"], ondelete="CASCADE")
    op.drop_column("call_attempts", "fraud_type")
    op.drop_column("bot_deliveries", "case_id")
    op.drop_column("bot_deliveries", "region_code")
    op.drop_column("bot_deliveries", "fraud_type")
    op.drop_index("ix_jobs_locked_by", table_name="jobs")
    op.drop_index("ix_jobs_scoped_ready", table_name="jobs")
    op.execute("CREATE INDEX ix_jobs_operator_queue ON jobs (run_at, task_id)"
               " WHERE queue = 'callcenter' AND kind = 'call.operator' AND status = 'queued'")
    op.drop_column("jobs", "due_at")
    op.drop_column("jobs", "scope")
