"""Indexes for the consoles' reports at scale (overview, compliance, audit by case).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-21

One index: ``ix_tasks_due_region`` on tasks (due_at, region_code
text_pattern_ops), for "tasks of a unit due in a period": the compliance report
(GET /v1/reports/compliance, default the last 7 days), the console overview's
7-day compliance chart (console.service.daily_compliance) and the ranking (two
periods). Before it, the only way in for a province was ix_tasks_region: every
task the province ever had (77,600 of 1,000,000 for unit 33 over 60 days),
each one fetched from the table to test its due_at, to keep ~9,000. With it, a
range scan over the period's entries tests the region inside the index and
fetches only the rows it keeps. EXPLAIN ANALYZE at 1,000,000 tasks (`shouhu
bench consoles`' data, warm cache, unit 33, 7 days): compliance 156 ms -> 29
ms, the daily chart 171 ms -> 21 ms. Through HTTP (the same bench, p95 of 200
sequential requests): GET /v1/reports/compliance 203 ms -> 31 ms, the overview
page GET /console 194 ms -> 31 ms; 4 clients at once: 356 -> 69 and 349 -> 80.
(Those "after" figures also need the reports planned for their parameters'
values: see reports.service.plan_for_values.)

Why due_at first (not region_code first): the work stays proportional to the
period asked for, whatever the history kept; region first would walk all of a
unit's history, which only grows. New tasks land at the right end of due_at
(now + 2 h / 24 h / 72 h), so inserts touch few, hot leaf pages.

Its cost on the ingest path: one more B-tree entry per task row version
written (a task is inserted once and updated a few times; every status change
is already a non-HOT update because status is in ix_tasks_live_due's
predicate). Measured with plain 1,000-row INSERTs into a copy of the 1M-row
tasks table: about 4 us more per row (medians of 9 alternating runs, a noisy
2-core machine), against the ~200 us of dispatcher CPU each accepted warning
costs: ~2% of the ingest path at most.

Not added, on purpose:
- the live overview (open tasks by tier and status, the nearest deadlines)
  already has ix_tasks_live_due (partial: open tasks only, a few thousand
  rows): 6-13 ms at 1M tasks;
- the audit search for one case already has ix_audit_log_case_id (case_id,
  seq): under 0.1 ms at 3.5M entries.

Built without CONCURRENTLY (migrations run in a transaction): at 1M tasks the
build takes about a second, during which writes to tasks wait.
"""
from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_tasks_due_region ON tasks (due_at, region_code text_pattern_ops)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_tasks_due_region")
