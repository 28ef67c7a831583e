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
Like pgqueuer's heartbeats, a worker keeps short leases (seconds) alive while
its jobs run (`extend_leases`, one statement for all it holds), so a dead
worker's jobs return within seconds and a long job is never run twice; a
returned job keeps its run_at and priority (its place in the queue).
`shouhu bench queue` measures both queues side by side.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from shared.queue.models import CANCELLED, FAILED, LEVEL_COLUMNS, QUEUED, RUNNING
from shared.sql import dumps, recordset, sql

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
    # For jobs people claim (seat operators): the region-code unit whose people may take it, and the
    # deadline that orders it after its priority. Worker-run jobs leave both unset.
    scope: str | None = None
    due_at: datetime | None = None


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
    lease_expires_at: datetime | None = None
    scope: str | None = None
    due_at: datetime | None = None
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
                " INSERT INTO jobs (queue, kind, payload, run_at, priority, dedupe_key, task_id, max_attempts, scope,"
                " due_at)"
                " SELECT queue, kind, payload, run_at, priority, dedupe_key, task_id, max_attempts, scope, due_at"
                " FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(queue text, kind text, payload jsonb,"
                " run_at timestamptz, priority smallint, dedupe_key text, task_id uuid, max_attempts smallint,"
                " scope text, due_at timestamptz)"
                " ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running')"
                " DO NOTHING RETURNING queue, run_at),"
                # One wake-up per queue that got a job it can run now; delivered at commit.
                " woken AS (SELECT pg_notify(:channel, q) FROM"
                " (SELECT DISTINCT queue AS q FROM inserted WHERE run_at <= :soon) AS d)"
                " SELECT (SELECT count(*) FROM inserted) AS inserted, (SELECT count(*) FROM woken) AS woken"
            ),
            {"rows": recordset({"queue": j.queue, "kind": j.kind, "payload": j.payload, "run_at": j.run_at,
                                "priority": j.priority, "dedupe_key": j.dedupe_key, "task_id": j.task_id,
                                "max_attempts": j.max_attempts, "scope": j.scope, "due_at": j.due_at} for j in jobs),
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
    scope_prefix: str | None = None,
    short_lease: tuple[int, float] | None = None,
) -> list[ClaimedJob]:
    """Take up to `limit` runnable jobs of `queue` under a lease.

    Worker-run jobs go highest priority first, then oldest. Jobs that people
    claim (`scope_prefix` given: a seat of that unit) go highest priority
    first, then nearest deadline (`due_at`), and only those whose scope lies
    in the unit. `short_lease` (priority, seconds): a job of that priority or
    more urgent gets the shorter lease instead of `lease_s` (a seat's high-tier
    claim comes back sooner when the seat goes quiet), in the same statement.
    """
    statement, params = claim_statement(queue=queue, worker=worker, now=now, lease_s=lease_s, limit=limit,
                                        kinds=kinds, scope_prefix=scope_prefix, short_lease=short_lease)
    rows = (await session.execute(sql(statement), params)).all()
    return [_claimed(r) for r in sorted(rows, key=lambda r: r.id)]


def claim_statement(*, queue: str, worker: str, now: datetime, lease_s: float, limit: int = 1,
                    kinds: Sequence[str] | None = None, scope_prefix: str | None = None,
                    short_lease: tuple[int, float] | None = None) -> tuple[str, dict[str, Any]]:
    """The SQL text and parameters `claim` runs (`shouhu bench calls` EXPLAINs it as the seats run it)."""
    kind_filter = "AND kind = ANY(CAST(:kinds AS text[]))" if kinds else ""
    params: dict[str, Any] = {"queue": queue, "now": now, "limit": limit, "lease": lease_s, "worker": worker,
                              "kinds": list(kinds or [])}
    lease = ":lease"
    if short_lease is not None:
        lease = ("CASE WHEN jobs.priority <= CAST(:short_priority AS int) THEN CAST(:short_lease AS float8)"
                 " ELSE CAST(:lease AS float8) END")
        params |= {"short_priority": short_lease[0], "short_lease": short_lease[1]}
    if scope_prefix is None:
        scope_filter, order = "", "priority, run_at"
    else:
        scope_filter, scope_params = _scope_filter(scope_prefix)
        order = "priority, due_at, id"
        params |= scope_params
    return (
        "WITH picked AS ("
        "  SELECT id FROM jobs"
        f"  WHERE status = 'queued' AND queue = :queue AND run_at <= :now {kind_filter} {scope_filter}"
        f"  ORDER BY {order} LIMIT :limit FOR UPDATE SKIP LOCKED)"
        " UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1,"
        f"   lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => {lease}), locked_by = :worker"
        f" FROM picked WHERE jobs.id = picked.id RETURNING {_CLAIMED}"
    ), params


def _scope_filter(unit: str) -> tuple[str, dict[str, Any]]:
    """The WHERE clause for the jobs a seat of `unit` may take, written so that one index answers it in order.

    A unit of 2, 4 or 6 characters (province, city, district: every unit a key can have) is an equality on
    that level's generated column, and its index (queue, level, priority, due_at, id, run_at) yields the
    jobs already in claim order: the claim reads the first unlocked runnable row, with no sort. A unit of
    another length (none today) narrows by the longest level it contains, then LIKE: still in index
    order. The nationwide unit "" (a key for "all") has no level: every scoped job, sorted (correct,
    slower; a seat for the whole country is not how the desks are organised).

    Why generated columns on jobs rather than a claimable-work table beside it: the level columns are
    written by PostgreSQL in the very statement that writes `scope` (enqueue, update_task_jobs), and the
    partial indexes follow `status` by themselves, so no code path (claim, release, reclaim, fail,
    cancel) has a second row to keep in step, and the claim stays one statement on one table.
    """
    level = max((n for n in LEVEL_COLUMNS if n <= len(unit)), default=None)
    if level is None:
        return "AND scope LIKE :scope", {"scope": _prefix_pattern(unit)}
    clause = f"AND {LEVEL_COLUMNS[level]} = :level_unit"
    if level == len(unit):
        return clause, {"level_unit": unit}
    return f"{clause} AND scope LIKE :scope", {"level_unit": unit[:level], "scope": _prefix_pattern(unit)}


def scope_clause(unit: str) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (and its parameters) for the jobs people of `unit` may take, as the claim filters them:
    for counting a unit's queue over the same level index (the seat board's queue depth)."""
    return _scope_filter(unit)


_CLAIMED = ("jobs.id, jobs.queue, jobs.kind, jobs.payload, jobs.attempts, jobs.max_attempts, jobs.task_id, jobs.run_at,"
            " jobs.created_at, jobs.lease_expires_at, jobs.scope, jobs.due_at")


def _claimed(r: Any) -> ClaimedJob:
    return ClaimedJob(id=r.id, queue=r.queue, kind=r.kind, payload=r.payload, attempts=r.attempts,
                      max_attempts=r.max_attempts, task_id=r.task_id, run_at=r.run_at, created_at=r.created_at,
                      lease_expires_at=r.lease_expires_at, scope=r.scope, due_at=r.due_at)


def _prefix_pattern(prefix: str | None) -> str | None:
    """A LIKE pattern matching everything that starts with `prefix` (its own % and _ escaped)."""
    if prefix is None:
        return None
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def claim_task_job(session: AsyncSession, *, task_id: uuid.UUID, kinds: Sequence[str], worker: str,
                         now: datetime, lease_s: float) -> ClaimedJob | None:
    """Take a task's waiting job of these kinds for `worker` whatever its run time, or None.

    For a person who already has the work in hand: a seat that answered a
    live transfer claims the operator call the dispatcher queued for it, which
    waits (run_at later) so that no other seat takes it meanwhile.
    """
    row = (await session.execute(
        sql("WITH picked AS (SELECT id FROM jobs WHERE task_id = :task AND status = 'queued'"
            " AND kind = ANY(CAST(:kinds AS text[])) ORDER BY priority, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1, locked_by = :worker,"
            " lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => :lease)"
            f" FROM picked WHERE jobs.id = picked.id RETURNING {_CLAIMED}"),
        {"task": task_id, "kinds": list(kinds), "worker": worker, "now": now, "lease": lease_s})).first()
    return _claimed(row) if row else None


async def held(session: AsyncSession, *, worker: str, kinds: Sequence[str], task_id: uuid.UUID | None = None,
               lock: bool = False) -> list[ClaimedJob]:
    """The jobs `worker` (a seat) holds under a live lease, of these kinds, optionally for one task; nearest deadline first."""
    task_filter = "AND task_id = :task" if task_id is not None else ""
    rows = (await session.execute(
        sql(f"SELECT {_CLAIMED} FROM jobs WHERE status = 'running' AND locked_by = :worker"
            f" AND kind = ANY(CAST(:kinds AS text[])) {task_filter} ORDER BY due_at NULLS LAST, id"
            + (" FOR UPDATE" if lock else "")),
        {"worker": worker, "kinds": list(kinds), "task": task_id})).all()
    return [_claimed(r) for r in rows]


async def holders(session: AsyncSession, *, kinds: Sequence[str],
                  task_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Who holds each of these tasks' running jobs of these kinds: task id -> locked_by (absent: none held)."""
    if not task_ids:
        return {}
    rows = (await session.execute(
        sql("SELECT task_id, locked_by FROM jobs WHERE status = 'running' AND kind = ANY(CAST(:kinds AS text[]))"
            " AND task_id = ANY(CAST(:ids AS uuid[])) ORDER BY id"), {"kinds": list(kinds), "ids": list(task_ids)})).all()
    return {r.task_id: r.locked_by for r in rows}


async def waiting_task_jobs(session: AsyncSession, *, task_id: uuid.UUID,
                            kinds: Sequence[str]) -> list[tuple[ClaimedJob, str, str | None]]:
    """A task's jobs of these kinds still to run or running (status, holder), soonest first: what is planned next."""
    rows = (await session.execute(
        sql(f"SELECT {_CLAIMED}, jobs.status, jobs.locked_by FROM jobs WHERE task_id = :task"
            " AND kind = ANY(CAST(:kinds AS text[])) AND status IN ('queued', 'running') ORDER BY run_at, id"),
        {"task": task_id, "kinds": list(kinds)})).all()
    return [(_claimed(r), r.status, r.locked_by) for r in rows]


async def update_task_jobs(session: AsyncSession, *, task_id: uuid.UUID, kinds: Sequence[str],
                           priority: int | None = None, due_at: datetime | None = None, scope: str | None = None,
                           run_by: datetime | None = None, payload_patch: dict[str, Any] | None = None) -> int:
    """Keep a task's waiting and claimed jobs of these kinds current (a raised tier, a new unit, "call now").

    `priority` only ever makes a job more urgent (an emergency stays first); `run_by` brings its run
    time forward to that moment at the latest; `payload_patch` merges into the payload. Returns how
    many jobs there were.
    """
    result = await session.execute(
        sql("UPDATE jobs SET priority = LEAST(priority, COALESCE(CAST(:priority AS smallint), priority)),"
            " due_at = COALESCE(CAST(:due_at AS timestamptz), due_at), scope = COALESCE(CAST(:scope AS text), scope),"
            " run_at = LEAST(run_at, COALESCE(CAST(:run_by AS timestamptz), run_at)),"
            " payload = payload || CAST(:patch AS jsonb)"
            " WHERE task_id = :task AND kind = ANY(CAST(:kinds AS text[])) AND status IN ('queued', 'running')"),
        {"task": task_id, "kinds": list(kinds), "priority": priority, "due_at": due_at, "scope": scope,
         "run_by": run_by, "patch": dumps(payload_patch or {}).decode()})
    return result.rowcount or 0


async def fold_into_live(session: AsyncSession, job: NewJob) -> ClaimedJob | None:
    """Fold `job` into its task's live (queued or running) job of the same kind, if it has one; return that job.

    For work a task must have at most once at a time: two live operator calls of one task are two seats
    calling the same citizen. None: nothing live, nothing written (the caller enqueues `job`). The live job
    becomes as urgent as the more urgent of the two; it runs at the new job's time when the new one is more
    urgent (a citizen waiting on the line), else at the earlier of the two; it takes the new deadline, scope
    and payload fields except the attempt number (it is still the attempt it was) and a false flag (an
    emergency stays one). A running job stays with its holder. The caller serializes per task (the
    dispatcher holds the task's row lock), so two callers cannot both find nothing live and both enqueue.
    """
    patch = {k: v for k, v in job.payload.items() if k != "attempt" and v is not False}
    row = (await session.execute(
        sql("UPDATE jobs SET priority = LEAST(priority, CAST(:priority AS smallint)),"
            " run_at = CASE WHEN CAST(:priority AS smallint) < priority THEN CAST(:run_at AS timestamptz)"
            "   ELSE LEAST(run_at, CAST(:run_at AS timestamptz)) END,"
            " due_at = COALESCE(CAST(:due_at AS timestamptz), due_at), scope = COALESCE(CAST(:scope AS text), scope),"
            " payload = payload || CAST(:patch AS jsonb)"
            " WHERE id = (SELECT id FROM jobs WHERE task_id = :task AND kind = :kind AND status IN ('queued', 'running')"
            "   ORDER BY id LIMIT 1 FOR UPDATE)"
            f" RETURNING {_CLAIMED}"),
        {"priority": job.priority, "run_at": job.run_at, "due_at": job.due_at, "scope": job.scope,
         "patch": dumps(patch).decode(), "task": job.task_id, "kind": job.kind})).first()
    return _claimed(row) if row else None


async def has_ready(session: AsyncSession, *, queue: str, now: datetime, priority_below: int) -> bool:
    """Whether a job of `queue` more urgent than `priority_below` is waiting to run now (ix_jobs_ready answers it)."""
    return bool((await session.execute(
        sql("SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = :q AND status = 'queued' AND priority < :p"
            " AND run_at <= :now)"), {"q": queue, "p": priority_below, "now": now})).scalar())


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


async def complete_held(session: AsyncSession, *, worker: str, kinds: Sequence[str],
                        task_id: uuid.UUID) -> ClaimedJob | None:
    """Finish the job of these kinds that `worker` (a seat) holds for a task, and return it; None if it holds none.

    `held(..., lock=True)` then `complete` in one statement: a seat's disposition is a round trip shorter. The
    caller's transaction still decides: a refusal after this (raised before commit) puts the job back.
    """
    row = (await session.execute(
        sql("WITH mine AS (SELECT id FROM jobs WHERE status = 'running' AND locked_by = :worker"
            "   AND kind = ANY(CAST(:kinds AS text[])) AND task_id = :task ORDER BY due_at NULLS LAST, id LIMIT 1"
            "   FOR UPDATE)"
            f" DELETE FROM jobs USING mine WHERE jobs.id = mine.id RETURNING {_CLAIMED}"),
        {"worker": worker, "kinds": list(kinds), "task": task_id})).first()
    return _claimed(row) if row else None


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


async def extend_leases(session: AsyncSession, *, job_ids: Sequence[int], worker: str, now: datetime,
                        lease_s: float) -> set[int]:
    """A worker's heartbeat: push out the leases of all the jobs it runs in one statement; return those it still holds.

    Rows locked by another transaction (the job's own handler deleting it, a
    task update) are skipped rather than waited for: an extension stuck behind
    a long handler transaction would not be visible to the reclaim sweep
    anyway. They count as held if this worker still holds them; the next beat
    extends them. A job missing from the answer was reclaimed: its lease is lost.
    """
    if not job_ids:
        return set()
    rows = (await session.execute(
        sql("WITH mine AS (SELECT id FROM jobs WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'running'"
            " AND locked_by = :worker),"
            " extended AS (UPDATE jobs SET lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => :lease)"
            "  FROM (SELECT id FROM jobs WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'running'"
            "   AND locked_by = :worker FOR UPDATE SKIP LOCKED) AS p WHERE jobs.id = p.id RETURNING jobs.id)"
            " SELECT id FROM mine UNION SELECT id FROM extended"),
        {"ids": list(job_ids), "worker": worker, "now": now, "lease": lease_s})).all()
    return {r.id for r in rows}


async def complete_many(session: AsyncSession, *, job_ids: Sequence[int], worker: str) -> set[int]:
    """Finish many jobs of external handlers in one statement; return the ids deleted (the others' leases were lost)."""
    if not job_ids:
        return set()
    rows = (await session.execute(
        sql("DELETE FROM jobs WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'running' AND locked_by = :worker"
            " RETURNING id"), {"ids": list(job_ids), "worker": worker})).all()
    return {r.id for r in rows}


async def release(session: AsyncSession, *, job_ids: Sequence[int], worker: str) -> int:
    """Give jobs back untouched (a worker shutting down): queued again in their place, the attempt not counted.

    run_at and priority are kept, so they are taken before anything queued
    after them; other workers of the queue are woken at commit.
    """
    if not job_ids:
        return 0
    row = (await session.execute(
        sql("WITH back AS (UPDATE jobs SET status = 'queued', locked_by = NULL, lease_expires_at = NULL,"
            " attempts = GREATEST(attempts - 1, 0)"
            " WHERE id = ANY(CAST(:ids AS bigint[])) AND status = 'running' AND locked_by = :worker"
            " RETURNING queue),"
            " woken AS (SELECT pg_notify(:channel, q) FROM (SELECT DISTINCT queue AS q FROM back) AS d)"
            " SELECT (SELECT count(*) FROM back) AS back, (SELECT count(*) FROM woken) AS woken"),
        {"ids": list(job_ids), "worker": worker, "channel": NOTIFY_CHANNEL})).one()
    return int(row.back)


async def reclaim_expired(session: AsyncSession, *, now: datetime) -> int:
    """Put jobs whose worker died (lease expired) back in the queue; dead-letter those out of attempts.

    A reclaimed job keeps its run_at and priority: it goes back to its place,
    ahead of what was queued after it, not behind the whole queue. The sweep
    reads only ix_jobs_leased (running rows), so workers run it every few seconds.
    """
    result = await session.execute(
        sql(
            f"UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN '{FAILED}' ELSE '{QUEUED}' END,"
            " locked_by = NULL, lease_expires_at = NULL,"
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
