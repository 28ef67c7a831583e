"""The job runner every service uses: claim, run, finish, with leases and NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.clock import Clock
from shared.db import raw_connect
from shared.queue import service as q

log = structlog.get_logger(__name__)

JOBS_DONE = Counter("shouhu_jobs_total", "Jobs finished, by queue, kind and result", ["queue", "kind", "result"])
JOB_SECONDS = Histogram("shouhu_job_seconds", "Time to run one job", ["queue", "kind"])
JOB_LAG_SECONDS = Histogram(
    "shouhu_job_lag_seconds", "From a job's run_at to its claim", ["queue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class PermanentJobError(Exception):
    """The job can never succeed (bad payload, number does not exist): dead-letter it, do not retry."""


class RetryLater(Exception):
    """Try again after `delay_s` without counting it as an error (a rate limit, a closed call window)."""

    def __init__(self, delay_s: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay_s}s")
        self.delay_s = delay_s


# A transactional handler does only database work: it runs inside the transaction
# that also deletes its job, so its effect happens exactly once.
TransactionalHandler = Callable[[AsyncSession, q.ClaimedJob], Awaitable[None]]
# An external handler talks to the network (Telegram, Twilio): it must open its
# own short transactions around the call and be idempotent (attempt records).
ExternalHandler = Callable[[q.ClaimedJob], Awaitable[None]]


@dataclass
class Handler:
    fn: TransactionalHandler | ExternalHandler
    transactional: bool = True


def default_worker_name(queue: str) -> str:
    return f"{queue}@{socket.gethostname()}:{os.getpid()}:{random.randrange(16**4):04x}"


class Worker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        queue: str,
        handlers: dict[str, Handler],
        clock: Clock,
        database_url: str | None = None,
        name: str | None = None,
        batch_size: int = 20,
        concurrency: int = 8,
        lease_s: float = 60.0,
        poll_interval_s: float = 1.0,
        max_backoff_s: float = 300.0,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.queue = queue
        self.handlers = handlers
        self.clock = clock
        self.database_url = database_url
        self.name = name or default_worker_name(queue)
        self.batch_size = batch_size
        self.lease_s = lease_s
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._last_reclaim = 0.0

    # ---- one round (tests call this directly) -------------------------------------------------
    async def run_once(self) -> int:
        """Reclaim expired leases, claim one batch, run it; return how many jobs ran."""
        now = self.clock.now()
        loop_now = asyncio.get_running_loop().time()
        if loop_now - self._last_reclaim >= min(self.lease_s / 4, 5.0):
            self._last_reclaim = loop_now
            async with self.sessionmaker() as session, session.begin():
                back = await q.reclaim_expired(session, now=now)
            if back:
                log.warning("jobs.lease_expired", queue=self.queue, count=back)
        async with self.sessionmaker() as session, session.begin():
            jobs = await q.claim(session, queue=self.queue, worker=self.name, now=now,
                                 lease_s=self.lease_s, limit=self.batch_size, kinds=list(self.handlers))
        for job in jobs:
            JOB_LAG_SECONDS.labels(self.queue).observe(max(0.0, (now - job.run_at).total_seconds()))
        await asyncio.gather(*(self._run_job(job) for job in jobs))
        return len(jobs)

    async def drain(self, max_rounds: int = 100) -> int:
        """Run rounds until nothing is runnable (tests, benchmarks)."""
        total = 0
        for _ in range(max_rounds):
            ran = await self.run_once()
            total += ran
            if not ran:
                break
        return total

    async def _run_job(self, job: q.ClaimedJob) -> None:
        handler = self.handlers[job.kind]
        async with self._slots:
            structlog.contextvars.bind_contextvars(job_id=job.id, job_kind=job.kind,
                                                   task_id=str(job.task_id) if job.task_id else None)
            try:
                with JOB_SECONDS.labels(self.queue, job.kind).time():
                    if handler.transactional:
                        async with self.sessionmaker() as session, session.begin():
                            await handler.fn(session, job)  # type: ignore[call-arg]
                            await q.complete(session, job_id=job.id, worker=self.name)
                    else:
                        await handler.fn(job)  # type: ignore[call-arg]
                        async with self.sessionmaker() as session, session.begin():
                            await q.complete(session, job_id=job.id, worker=self.name)
                JOBS_DONE.labels(self.queue, job.kind, "done").inc()
            except q.LeaseLost:
                # Another worker owns it now; our transaction rolled back, so nothing we did counts.
                JOBS_DONE.labels(self.queue, job.kind, "lease_lost").inc()
                log.warning("job.lease_lost")
            except RetryLater as exc:
                await self._give_back(job, str(exc), exc.delay_s, counts_as_error=False)
            except PermanentJobError as exc:
                await self._give_back(job, f"permanent: {exc}", None)
            except Exception as exc:  # noqa: BLE001 - a failing job must never stop the worker
                delay = min(self.max_backoff_s, 2 ** min(job.attempts, 10)) * (0.8 + random.random() * 0.4)
                log.exception("job.error", attempts=job.attempts, retry_in_s=round(delay, 1))
                await self._give_back(job, f"{type(exc).__name__}: {exc}", delay)
            finally:
                structlog.contextvars.unbind_contextvars("job_id", "job_kind", "task_id")

    async def _give_back(self, job: q.ClaimedJob, error: str, retry_in_s: float | None,
                         counts_as_error: bool = True) -> None:
        async with self.sessionmaker() as session, session.begin():
            if not counts_as_error:
                # Rate limits and call windows are not failures: do not use up the job's attempts.
                await session.execute(text("UPDATE jobs SET attempts = attempts - 1 WHERE id = :id"), {"id": job.id})
            status = await q.fail(session, job_id=job.id, worker=self.name, now=self.clock.now(),
                                  error=error, retry_in_s=retry_in_s)
        JOBS_DONE.labels(self.queue, job.kind, "dead" if status == "failed" else "retry").inc()
        if status == "failed":
            log.error("job.dead_lettered", error=error)

    # ---- the long-running loop --------------------------------------------------------------
    async def run(self) -> None:
        """Work until `stop()`; NOTIFY wakes us early, polling covers lost notifications and delayed jobs."""
        listener = asyncio.create_task(self._listen())
        log.info("worker.started", queue=self.queue, worker=self.name, kinds=sorted(self.handlers))
        try:
            while not self._stopping.is_set():
                try:
                    ran = await self.run_once()
                except Exception:  # noqa: BLE001 - the database may be restarting: wait and go on
                    log.exception("worker.round_failed")
                    ran = 0
                    await asyncio.sleep(self.poll_interval_s)
                if ran >= self.batch_size:
                    continue  # more is probably waiting
                self._wake.clear()
                with contextlib.suppress(TimeoutError):  # no NOTIFY came: poll anyway (lost wake-ups, delays)
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            log.info("worker.stopped", queue=self.queue, worker=self.name)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def _listen(self) -> None:
        if not self.database_url:
            return
        while not self._stopping.is_set():
            conn = None
            try:
                conn = await raw_connect(self.database_url)

                def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
                    if payload == self.queue:
                        self._wake.set()

                await conn.add_listener(q.NOTIFY_CHANNEL, on_notify)
                while not self._stopping.is_set() and not conn.is_closed():
                    await asyncio.sleep(5)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - polling still runs; try to listen again shortly
                log.warning("worker.listen_failed", exc_info=True)
                await asyncio.sleep(2)
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close()
