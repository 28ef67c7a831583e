"""Enqueue, claim, finish and fail jobs in PostgreSQL.

Why our own module and not pgqueuer (which we evaluated, v1.6):
- A job must be enqueued *in the caller's SQLAlchemy transaction*, thousands
  per statement during batched ingest. pgqueuer enqueues through its own driver
  on its own connection, so sharing the transaction would mean reaching under
  SQLAlchemy for the raw asyncpg connection.
- Deadline timers are tested with a controllable clock: here `now` is a
  parameter of every claim, where pgqueuer compares with the database's NOW().
- Jobs carry the task they work for, so closing a task cancels its queued
  contact jobs in the same transaction (an acknowledgement stops contact).
What we keep from pgqueuer/River/Oban: one-statement claim with
`FOR UPDATE SKIP LOCKED`, leases that expire back to the queue, NOTIFY as a
wake-up hint with polling as the fallback, and finished rows deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shared.queue.models import CANCELLED, FAILED, QUEUED, RUNNING
from shared.sql import recordset, sql

NOTIFY_CHANNEL = "shouhu_jobs"


@dataclass(slots=True)
class NewJob:
    queue: str
    kind: str
    payload: dict[str, Any]
    run_at: datetime
    priority: int = 100
    dedupe_key: str | None = None
    task_id: uuid.UUID | None = None
    max_attempts: int = 10


@dataclass(slots=True)
class ClaimedJob:
    id: int
    queue: str
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    task_id: uuid.UUID | None
    run_at: datetime
    created_at: datetime
    extra: dict[str, Any] = field(default_factory=dict)


class LeaseLost(RuntimeError):
    """The job's lease expired and another worker took it: this worker's work must not count."""


async def enqueue(session: AsyncSession, jobs: Sequence[NewJob], *, now: datetime | None = None) -> int:
    """Insert jobs in the caller's transaction; return how many were new (dedupe keys skip live duplicates).

    Workers of each queue that got an immediately runnable job are woken by a
    NOTIFY (in the same statement), which PostgreSQL delivers only when the
    caller commits. Without `now`, every queue that got a job is woken.
    """
    if not jobs:
        return 0
    soon = now + timedelta(seconds=1) if now is not None else datetime(9999, 1, 1, tzinfo=UTC)
    row = (
        await session.execute(
            sql(
                "WITH inserted AS ("
                " INSERT INTO jobs (queue, kind, payload, run_at, priority, dedupe_key, task_id, max_attempts)"
                " SELECT queue, kind, payload, run_at, priority, dedupe_key, task_id, max_attempts"
                " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(queue text, kind text, payload jsonb,"
                " run_at timestamptz, priority smallint, dedupe_key text, task_id uuid, max_attempts smallint)"
                " ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running')"
                " DO NOTHING RETURNING queue, run_at),"
                # One wake-up per queue that got a job it can run now; delivered at commit.
                " woken AS (SELECT pg_notify(:channel, q) FROM"
                " (SELECT DISTINCT queue AS q FROM inserted WHERE run_at <= :soon) AS d)"
                " SELECT (SELECT count(*) FROM inserted) AS inserted, (SELECT count(*) FROM woken) AS woken"
            ),
            {"rows": recordset({"queue": j.queue, "kind": j.kind, "payload": j.payload, "run_at": j.run_at,
                                "priority": j.priority, "dedupe_key": j.dedupe_key, "task_id": j.task_id,
                                "max_attempts": j.max_attempts} for j in jobs),
             "channel": NOTIFY_CHANNEL, "soon": soon},
        )
    ).one()
    return int(row.inserted)


async def claim(
    session: AsyncSession,
    *,
    queue: str,
    worker: str,
    now: datetime,
    lease_s: float,
    limit: int = 1,
    kinds: Sequence[str] | None = None,
) -> list[ClaimedJob]:
    """Take up to `limit` runnable jobs of `queue`, highest priority and oldest first, under a lease."""
    kind_filter = "AND kind = ANY(CAST(:kinds AS text[]))" if kinds else ""
    rows = (
        await session.execute(
            sql(
                "WITH picked AS ("
                "  SELECT id FROM jobs"
                f"  WHERE status = 'queued' AND queue = :queue AND run_at <= :now {kind_filter}"
                "  ORDER BY priority, run_at LIMIT :limit FOR UPDATE SKIP LOCKED)"
                " UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1,"
                "   lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => :lease), locked_by = :worker"
                " FROM picked WHERE jobs.id = picked.id"
                " RETURNING jobs.id, jobs.queue, jobs.kind, jobs.payload, jobs.attempts, jobs.max_attempts,"
                "   jobs.task_id, jobs.run_at, jobs.created_at"
            ),
            {"queue": queue, "now": now, "limit": limit, "lease": lease_s, "worker": worker, "kinds": list(kinds or [])},
        )
    ).all()
    return [
        ClaimedJob(id=r.id, queue=r.queue, kind=r.kind, payload=r.payload, attempts=r.attempts,
                   max_attempts=r.max_attempts, task_id=r.task_id, run_at=r.run_at, created_at=r.created_at)
        for r in sorted(rows, key=lambda r: r.id)
    ]


async def complete(session: AsyncSession, *, job_id: int, worker: str) -> None:
    """Finish a job by deleting it; raise LeaseLost if this worker no longer holds it.

    Called in the same transaction as the handler's own writes, so the writes
    and the job's removal commit together or not at all: exactly once in effect.
    """
    result = await session.execute(
        sql("DELETE FROM jobs WHERE id = :id AND status = 'running' AND locked_by = :worker"),
        {"id": job_id, "worker": worker},
    )
    if result.rowcount != 1:
        raise LeaseLost(f"job {job_id} is no longer leased to {worker}")


async def extend_lease(session: AsyncSession, *, job_id: int, worker: str, now: datetime, lease_s: float) -> None:
    result = await session.execute(
        sql("UPDATE jobs SET lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => :lease) "
             "WHERE id = :id AND status = 'running' AND locked_by = :worker"),
        {"id": job_id, "worker": worker, "now": now, "lease": lease_s},
    )
    if result.rowcount != 1:
        raise LeaseLost(f"job {job_id} is no longer leased to {worker}")


async def fail(
    session: AsyncSession, *, job_id: int, worker: str, now: datetime, error: str, retry_in_s: float | None
) -> str:
    """Give a job back for a later retry, or dead-letter it (`retry_in_s=None` or attempts used up)."""
    row = (
        await session.execute(
            sql(
                "UPDATE jobs SET status = CASE WHEN CAST(:retry_in AS double precision) IS NULL"
                " OR attempts >= max_attempts"
                "   THEN 'failed' ELSE 'queued' END,"
                " run_at = CAST(:now AS timestamptz)"
                " + make_interval(secs => COALESCE(CAST(:retry_in AS double precision), 0)),"
                " last_error = :error, locked_by = NULL, lease_expires_at = NULL"
                " WHERE id = :id AND status = 'running' AND locked_by = :worker RETURNING status"
            ),
            {"id": job_id, "worker": worker, "now": now, "error": error[:2000], "retry_in": retry_in_s},
        )
    ).first()
    return row.status if row else "lost"


async def reclaim_expired(session: AsyncSession, *, now: datetime) -> int:
    """Put jobs whose worker died (lease expired) back in the queue; dead-letter those out of attempts."""
    result = await session.execute(
        sql(
            f"UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN '{FAILED}' ELSE '{QUEUED}' END,"
            " run_at = :now, locked_by = NULL, lease_expires_at = NULL,"
            " last_error = 'lease expired: the worker stopped before finishing'"
            f" WHERE status = '{RUNNING}' AND lease_expires_at < :now"
        ),
        {"now": now},
    )
    return result.rowcount or 0


async def cancel_task_jobs(session: AsyncSession, *, task_id: uuid.UUID, kinds: Sequence[str] | None = None) -> int:
    """Cancel a task's queued jobs (all, or of some kinds) in the caller's transaction."""
    kind_filter = "AND kind = ANY(CAST(:kinds AS text[]))" if kinds else ""
    result = await session.execute(
        sql(f"UPDATE jobs SET status = '{CANCELLED}' WHERE task_id = :task AND status = '{QUEUED}' {kind_filter}"),
        {"task": task_id, "kinds": list(kinds or [])},
    )
    return result.rowcount or 0


async def purge_cancelled(session: AsyncSession, *, limit: int = 10_000) -> int:
    """Delete cancelled jobs (kept only so a cancellation is visible until the next sweep)."""
    result = await session.execute(
        sql(f"DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status = '{CANCELLED}' LIMIT :n)"),
        {"n": limit},
    )
    return result.rowcount or 0
