"""The job runner every service uses: claim, run, finish, with leases and NOTIFY wake-ups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

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
    """Try again after `delay_s` without counting it as an error (a rate limit, a closed call window).

    `delay_s` is real seconds (a provider's rate limit, a request in flight); `on_clock=True` says it is
    clock time instead (until a call window opens), which a fast clock (SHOUHU_TIME_SCALE) compresses.
    """

    def __init__(self, delay_s: float, reason: str = "", *, on_clock: bool = False) -> None:
        super().__init__(reason or f"retry in {delay_s}s")
        self.delay_s = delay_s
        self.on_clock = on_clock


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
    # Transactional handlers only: run the round's jobs of this kind in one transaction, a SAVEPOINT
    # each (a failing job rolls back alone and is failed on its own; the others commit together).
    # One commit per batch instead of per job, but the batch's row locks are held until the last job
    # ends and its jobs run one after another: for light, short handlers.
    batch: bool = False


def default_worker_name(queue: str) -> str:
    return f"{queue}@{socket.gethostname()}:{os.getpid()}:{random.randrange(16**4):04x}"


class Worker:
    """Claims jobs, runs them (at most `concurrency` at once), finishes them; heartbeats keep their leases.

    Lease and heartbeat: a claim leases its jobs for `lease_s` (seconds, sized to
    notice a dead worker quickly); while they run, one statement every
    `heartbeat_s` (lease/3) pushes out the leases of all jobs this worker holds,
    so a handler running past `lease_s` is never taken by another worker. A
    worker that dies stops beating; the reclaim sweep (every `reclaim_every_s`)
    puts its jobs back in their place within about lease + sweep seconds.
    """

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
        lease_s: float = 10.0,
        heartbeat_s: float | None = None,
        reclaim_every_s: float | None = None,
        grace_s: float = 8.0,
        poll_interval_s: float = 1.0,
        max_backoff_s: float = 300.0,
    ) -> None:
        self.sessionmaker = sessionmaker
        # The queue's own writes (claim, finish, heartbeat, sweep, release) are one statement each: run
        # them in autocommit, one round trip apiece instead of BEGIN, statement, COMMIT. Same pool.
        # In run() and drain() they go through one connection the worker keeps (_OwnConnection): no pool
        # checkout per statement (with pool_pre_ping, a checkout costs a ping of three round trips).
        bind = sessionmaker.kw.get("bind")
        self._autocommit = bind.execution_options(isolation_level="AUTOCOMMIT") if isinstance(bind, AsyncEngine) else None
        self._pooled = (
            async_sessionmaker(self._autocommit, expire_on_commit=False, autoflush=False)
            if self._autocommit is not None else sessionmaker)
        self._one_statement: Callable[[], contextlib.AbstractAsyncContextManager[Any]] = self._pooled
        self.queue = queue
        self.handlers = handlers
        self.clock = clock
        self.database_url = database_url
        self.name = name or default_worker_name(queue)
        self.batch_size = batch_size
        # Real seconds. Leases, heartbeats and backoffs are about processes and providers, not the domain:
        # what goes to the database on the clock's scale is clock.real_s(...) of them (shared/clock.py).
        self.lease_s = lease_s
        # Three beats per lease: two may be lost (a slow database) before the lease runs out.
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else lease_s / 3
        self.reclaim_every_s = reclaim_every_s if reclaim_every_s is not None else min(lease_s / 4, 2.5)
        self.grace_s = grace_s
        self.poll_interval_s = poll_interval_s
        self.max_backoff_s = max_backoff_s
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        # Claimed jobs whose handler has not yet taken a slot, slots taken, and a wake-up for when one frees.
        self._waiting = 0
        self._in_slots = 0
        self._room = asyncio.Event()
        self._finish_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._last_reclaim = float("-inf")
        # The jobs this worker has claimed and not yet finished, given back or lost (heartbeat, release).
        self._held: dict[int, q.ClaimedJob] = {}
        # External handlers' jobs that ran and wait for the round's one DELETE.
        self._finished: list[q.ClaimedJob] = []
        self._finishing: asyncio.Task[None] | None = None
        # Jobs a heartbeat found taken by someone else: their completion must not count.
        self._lost: set[int] = set()
        # Set while the LISTEN connection is up (tests wait for it before relying on a wake-up).
        self.listening = asyncio.Event()

    # ---- one round (tests call this directly) -------------------------------------------------
    async def run_once(self) -> int:
        """Reclaim expired leases, claim one batch, run it, finish it; return how many jobs ran."""
        return await self._round(sweep=True, finish_now=True)

    async def _sweep(self, now: datetime) -> None:
        self._last_reclaim = asyncio.get_running_loop().time()
        async with self._one_statement() as session:
            back = await q.reclaim_expired(session, now=now)
        if back:
            log.warning("jobs.lease_expired", queue=self.queue, count=back)

    async def _round(self, *, sweep: bool, finish_now: bool) -> int:
        """One batch, claimed and run to its end. `finish_now=False` (drain): the finished external jobs' DELETE
        goes on in the background while the next batch is claimed, off the path from a wake-up to a handler."""
        if sweep and asyncio.get_running_loop().time() - self._last_reclaim >= self.reclaim_every_s:
            await self._sweep(self.clock.now())
        jobs = await self._claim(self.batch_size)
        if not jobs:
            return 0
        await self._work(jobs, finish_now=finish_now, heartbeat=True)
        return len(jobs)

    async def _claim(self, limit: int) -> list[q.ClaimedJob]:
        """Claim up to `limit` runnable jobs; from here they are held (heartbeats keep their leases)."""
        now = self.clock.now()
        async with self._one_statement() as session:
            jobs = await q.claim(session, queue=self.queue, worker=self.name, now=now,
                                 lease_s=self.clock.real_s(self.lease_s), limit=limit, kinds=list(self.handlers))
        self._held.update((job.id, job) for job in jobs)
        self._waiting += len(jobs)  # until each one's handler takes a slot (_run_job, _run_batch)
        for job in jobs:
            JOB_LAG_SECONDS.labels(self.queue).observe(max(0.0, (now - job.run_at).total_seconds()))
        return jobs

    async def _work(self, jobs: list[q.ClaimedJob], *, finish_now: bool, heartbeat: bool) -> None:
        """Run claimed jobs to their end. `heartbeat`: keep their leases with a heartbeat of this call's own
        (run() has one for the whole worker instead)."""
        beating = asyncio.create_task(self._heartbeat(), name=f"heartbeat-{self.name}") if heartbeat else None
        try:
            batched: dict[str, list[q.ClaimedJob]] = {}
            singles: list[q.ClaimedJob] = []
            for job in jobs:
                handler = self.handlers[job.kind]
                if handler.transactional and handler.batch:
                    batched.setdefault(job.kind, []).append(job)
                else:
                    singles.append(job)
            # return_exceptions: one job's failure to record its outcome must not end the round while
            # the others still run.
            outcomes = await asyncio.gather(*(self._run_job(job) for job in singles),
                                            *(self._run_batch(group) for group in batched.values()),
                                            return_exceptions=True)
            if finish_now:
                await self._complete_finished()
            else:
                await self._finish_in_background()
            errors = [o for o in outcomes if isinstance(o, BaseException)]
            if errors:
                raise errors[0]
        except asyncio.CancelledError:
            raise  # shutting down: run() releases what is still held
        except BaseException:
            # An outcome that could not be written (the database went away): stop holding those jobs,
            # so their leases expire and the sweep returns them.
            for job in jobs:
                self._held.pop(job.id, None)
                self._lost.discard(job.id)
            raise
        finally:
            if beating is not None:
                beating.cancel()
                await asyncio.gather(beating, return_exceptions=True)

    async def drain(self, max_rounds: int = 100) -> int:
        """Run rounds until nothing is runnable (tests, benchmarks)."""
        total = 0
        own = self._own_connection()
        try:
            for _ in range(max_rounds):
                ran = await self._round(sweep=True, finish_now=False)
                total += ran
                if not ran:
                    break
        finally:
            await self._settle_finishing()
            await self._drop_own_connection(own)
        return total

    async def _run_job(self, job: q.ClaimedJob) -> None:
        handler = self.handlers[job.kind]
        async with self._slot(1):
            structlog.contextvars.bind_contextvars(job_id=job.id, job_kind=job.kind,
                                                   task_id=str(job.task_id) if job.task_id else None)
            try:
                with JOB_SECONDS.labels(self.queue, job.kind).time():
                    if handler.transactional:
                        async with self.sessionmaker() as session, session.begin():
                            await handler.fn(session, job)  # type: ignore[call-arg]
                            self._check_held(job)
                            await q.complete(session, job_id=job.id, worker=self.name)
                        self._done(job)
                    else:
                        await handler.fn(job)  # type: ignore[call-arg]
                        # Deleted with the round's other finished jobs in one statement (_complete_finished).
                        self._finished.append(job)
            except Exception as exc:  # noqa: BLE001 - a failing job must never stop the worker
                await self._failed(job, exc)
            finally:
                structlog.contextvars.unbind_contextvars("job_id", "job_kind", "task_id")

    async def _run_batch(self, jobs: list[q.ClaimedJob]) -> None:
        """Transactional jobs of one kind in one transaction, a savepoint each; failures handled one by one after."""
        handler = self.handlers[jobs[0].kind]
        done: list[q.ClaimedJob] = []
        failed: list[tuple[q.ClaimedJob, Exception]] = []
        try:
            async with self._slot(len(jobs)), self.sessionmaker() as session, session.begin():
                for job in jobs:
                    structlog.contextvars.bind_contextvars(job_id=job.id, job_kind=job.kind,
                                                           task_id=str(job.task_id) if job.task_id else None)
                    try:
                        with JOB_SECONDS.labels(self.queue, job.kind).time():
                            async with session.begin_nested():
                                await handler.fn(session, job)  # type: ignore[call-arg]
                                self._check_held(job)
                        done.append(job)
                    except Exception as exc:  # noqa: BLE001 - its savepoint rolled back; the others go on
                        failed.append((job, exc))
                    finally:
                        structlog.contextvars.unbind_contextvars("job_id", "job_kind", "task_id")
                # The batch's jobs leave in one DELETE, in the transaction of their handlers' writes. If
                # one was taken over meanwhile, nothing commits and each job runs again on its own.
                deleted = await q.complete_many(session, job_ids=[j.id for j in done], worker=self.name)
                if len(deleted) != len(done):
                    raise q.LeaseLost(f"{len(done) - len(deleted)} of the batch's jobs are no longer leased")
        except Exception:  # noqa: BLE001 - the batch's commit failed: nothing of it counted; run each on its own
            log.warning("jobs.batch_failed", queue=self.queue, kind=jobs[0].kind, count=len(jobs), exc_info=True)
            self._waiting += len(jobs)  # waiting again, one by one
            await asyncio.gather(*(self._run_job(job) for job in jobs))
            return
        for job in done:
            self._done(job)
        for job, exc in failed:
            await self._failed(job, exc)

    @contextlib.asynccontextmanager
    async def _slot(self, jobs: int) -> AsyncIterator[None]:
        """One of the `concurrency` slots, for a job or a savepoint batch of `jobs` (see run())."""
        async with self._slots:
            self._waiting -= jobs
            self._in_slots += 1
            if self._waiting == 0:
                self._room.set()  # the last claimed job to start lets run() claim again, if a slot is still free
            try:
                yield
            finally:
                self._in_slots -= 1
                self._room.set()

    def _check_held(self, job: q.ClaimedJob) -> None:
        if job.id in self._lost:
            raise q.LeaseLost(f"job {job.id}: a heartbeat found its lease taken over")

    def _done(self, job: q.ClaimedJob) -> None:
        self._held.pop(job.id, None)
        JOBS_DONE.labels(self.queue, job.kind, "done").inc()

    async def _complete_finished(self, finished: list[q.ClaimedJob] | None = None) -> None:
        """Delete the round's finished external jobs in one statement (their handlers' effects are already out)."""
        if finished is None:
            finished, self._finished = self._finished, []
        if not finished:
            return
        ids = [j.id for j in finished if j.id not in self._lost]
        async with self._one_statement() as session:
            deleted = await q.complete_many(session, job_ids=ids, worker=self.name)
        for job in finished:
            if job.id in deleted:
                self._done(job)
            else:
                self._lost_job(job)

    async def _finish_in_background(self) -> None:
        """Start this round's DELETE as a task (one at a time: the previous one is awaited first)."""
        async with self._finish_lock:  # batches running side by side (run()) finish one after another
            await self._settle_finishing()
            if self._finished:
                finished, self._finished = self._finished, []
                self._finishing = asyncio.create_task(self._finish_quietly(finished))

    async def _finish_quietly(self, finished: list[q.ClaimedJob]) -> None:
        try:
            await self._complete_finished(finished)
        except Exception:  # noqa: BLE001 - not finished: their leases expire and they run again (idempotent)
            log.warning("jobs.finish_failed", queue=self.queue, count=len(finished), exc_info=True)
            for job in finished:
                self._held.pop(job.id, None)
                self._lost.discard(job.id)

    async def _settle_finishing(self) -> None:
        if self._finishing is not None:
            await asyncio.gather(self._finishing, return_exceptions=True)
            self._finishing = None

    def _lost_job(self, job: q.ClaimedJob) -> None:
        # Another worker owns it now; what this run did must not count (a transaction rolled back).
        self._held.pop(job.id, None)
        self._lost.discard(job.id)
        JOBS_DONE.labels(self.queue, job.kind, "lease_lost").inc()
        log.warning("job.lease_lost", job_id=job.id, job_kind=job.kind)

    async def _failed(self, job: q.ClaimedJob, exc: Exception) -> None:
        if isinstance(exc, q.LeaseLost):
            self._lost_job(job)
        elif isinstance(exc, RetryLater):
            delay_s = exc.delay_s if exc.on_clock else self.clock.real_s(exc.delay_s)
            await self._give_back(job, str(exc), delay_s, counts_as_error=False)
        elif isinstance(exc, PermanentJobError):
            await self._give_back(job, f"permanent: {exc}", None)
        else:
            delay = min(self.max_backoff_s, 2 ** min(job.attempts, 10)) * (0.8 + random.random() * 0.4)
            log.error("job.error", job_id=job.id, job_kind=job.kind, attempts=job.attempts,
                      retry_in_s=round(delay, 1), exc_info=exc)
            await self._give_back(job, f"{type(exc).__name__}: {exc}", self.clock.real_s(delay))

    async def _give_back(self, job: q.ClaimedJob, error: str, retry_in_s: float | None,
                         counts_as_error: bool = True) -> None:
        """`retry_in_s`: clock seconds (callers convert real delays with clock.real_s)."""
        async with self.sessionmaker() as session, session.begin():
            if not counts_as_error:
                # Rate limits and call windows are not failures: do not use up the job's attempts.
                await session.execute(text("UPDATE jobs SET attempts = attempts - 1 WHERE id = :id"), {"id": job.id})
            status = await q.fail(session, job_id=job.id, worker=self.name, now=self.clock.now(),
                                  error=error, retry_in_s=retry_in_s)
        self._held.pop(job.id, None)
        self._lost.discard(job.id)
        JOBS_DONE.labels(self.queue, job.kind, "dead" if status == "failed" else "retry").inc()
        if status == "failed":
            log.error("job.dead_lettered", job_id=job.id, job_kind=job.kind, error=error)

    async def _heartbeat(self) -> None:
        """Every heartbeat_s, extend the leases of all jobs this worker holds (one statement)."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            ids = [i for i in self._held if i not in self._lost]
            if not ids:
                continue
            try:
                async with self._one_statement() as session:
                    kept = await q.extend_leases(session, job_ids=ids, worker=self.name, now=self.clock.now(),
                                                 lease_s=self.clock.real_s(self.lease_s))
            except Exception:  # noqa: BLE001 - the database may be restarting: the next beat tries again
                log.warning("worker.heartbeat_failed", queue=self.queue, exc_info=True)
                continue
            # Jobs finished meanwhile are gone from the table but not lost.
            lost = [i for i in ids if i not in kept and i in self._held]
            if lost:
                self._lost.update(lost)
                log.warning("worker.leases_lost", queue=self.queue, job_ids=lost)

    async def _release_held(self) -> None:
        """On shutdown: delete what finished, give the rest back in place (run_at, priority kept, attempt not counted)."""
        try:
            await self._settle_finishing()
            await self._complete_finished()
        except Exception:  # noqa: BLE001 - their leases expire; they run again (external handlers tolerate it)
            log.warning("worker.complete_on_stop_failed", queue=self.queue, exc_info=True)
        ids = [i for i in self._held if i not in self._lost]
        if not ids:
            return
        try:
            async with self._one_statement() as session:
                back = await q.release(session, job_ids=ids, worker=self.name)
            self._held.clear()
            log.info("worker.released", queue=self.queue, count=back)
        except Exception:  # noqa: BLE001 - the database is gone: the leases expire and the sweep returns them
            log.warning("worker.release_failed", queue=self.queue, count=len(ids), exc_info=True)

    # ---- the long-running loop --------------------------------------------------------------
    async def run(self) -> None:
        """Work until `stop()`; NOTIFY wakes us early, polling covers lost notifications and delayed jobs.

        Claiming goes on while jobs run: once every claimed job has taken a slot and a slot is still free,
        the next batch (up to `batch_size`) is claimed. A slow job (a provider taking its time, a dial up to
        its deadline) therefore holds its own slot only, never the jobs queued after it, as a whole-batch
        round did: one hung Twilio request kept every later warning call waiting for up to the dial
        deadline (90 s). Claiming a whole batch, rather than one job per freed slot, keeps the claim's cost
        per job where the rounds had it (one job per slot ran ~20% fewer jobs a second).

        After `stop()` nothing more is claimed; the running jobs get `grace_s` to finish, then their
        handlers are cancelled and what is still held is released back to the queue in its place.
        Cancelling `run()` itself releases the same way.
        """
        own = self._own_connection()
        listener = asyncio.create_task(self._listen())
        sweeper = asyncio.create_task(self._sweep_every())
        beating = asyncio.create_task(self._heartbeat(), name=f"heartbeat-{self.name}")
        running: set[asyncio.Task[None]] = set()
        log.info("worker.started", queue=self.queue, worker=self.name, kinds=sorted(self.handlers))
        try:
            while not self._stopping.is_set():
                self._room.clear()
                if self._waiting > 0 or self._in_slots >= self.concurrency:
                    await self._wait_for(self._room, None)  # set when a slot frees or a waiting job starts
                    continue
                # Cleared before the claim, not after: a NOTIFY arriving while it runs must start the next
                # claim at once, not wait for the poll.
                self._wake.clear()
                try:
                    jobs = await self._claim(self.batch_size)
                except Exception:  # noqa: BLE001 - the database may be restarting: wait and go on
                    log.exception("worker.claim_failed", queue=self.queue)
                    await self._wait_for(self._stopping, self.poll_interval_s)
                    continue
                if jobs:
                    work = asyncio.create_task(self._work_logged(jobs), name=f"jobs-{self.name}")
                    running.add(work)
                    work.add_done_callback(running.discard)
                    if len(jobs) >= self.batch_size:
                        continue  # more is probably waiting
                # No NOTIFY came: poll anyway (lost wake-ups, delayed jobs coming due).
                await self._wait_for(self._wake, self.poll_interval_s)
            if running:  # stop(): what runs gets its grace
                await asyncio.wait(set(running), timeout=self.grace_s)
        finally:
            for work in list(running):
                work.cancel()  # a no-op for what ended within its grace
            await asyncio.gather(*running, return_exceptions=True)
            # Shielded: a cancelled run() still gives its jobs back rather than leaving them to the sweep.
            await asyncio.shield(self._release_held())
            for task in (listener, sweeper, beating):
                task.cancel()
            await asyncio.gather(listener, sweeper, beating, return_exceptions=True)
            await self._drop_own_connection(own)
            log.info("worker.stopped", queue=self.queue, worker=self.name)

    async def _work_logged(self, jobs: list[q.ClaimedJob]) -> None:
        try:
            await self._work(jobs, finish_now=False, heartbeat=False)
        except Exception:  # noqa: BLE001 - an outcome could not be written: _work let go of those jobs
            log.exception("worker.round_failed", queue=self.queue)

    async def _wait_for(self, event: asyncio.Event, timeout_s: float | None) -> None:
        """Until `event` is set, `stop()` is called, or `timeout_s` (real seconds) passes."""
        waiters = {asyncio.create_task(event.wait()), asyncio.create_task(self._stopping.wait())}
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _sweep_every(self) -> None:
        """The reclaim sweep on its own timer, off the path from a wake-up to a handler."""
        while True:
            try:
                await self._sweep(self.clock.now())
            except Exception:  # noqa: BLE001 - the database may be restarting: the next sweep tries again
                log.warning("worker.sweep_failed", queue=self.queue, exc_info=True)
            await asyncio.sleep(self.reclaim_every_s)

    def _own_connection(self) -> _OwnConnection | None:
        if self._autocommit is None:
            return None
        own = _OwnConnection(self._autocommit)
        self._one_statement = own
        return own

    async def _drop_own_connection(self, own: _OwnConnection | None) -> None:
        if own is not None:
            self._one_statement = self._pooled
            await own.close()

    def stop(self) -> None:
        """Stop claiming now; the running batch gets `grace_s` before it is cancelled and released."""
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
                self.listening.set()
                while not self._stopping.is_set() and not conn.is_closed():
                    await asyncio.sleep(5)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - polling still runs; try to listen again shortly
                log.warning("worker.listen_failed", exc_info=True)
                await asyncio.sleep(2)
            finally:
                self.listening.clear()
                if conn is not None and not conn.is_closed():
                    await conn.close()


class _OwnConnection:
    """A worker's own autocommit connection for the queue's one-statement writes, one at a time.

    Taken from the pool on first use and kept; a statement that fails (or is
    cancelled) drops it, so the next one starts on a fresh connection (the
    database may have restarted).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.conn: AsyncConnection | None = None
        self.lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[AsyncConnection]:
        async with self.lock:
            if self.conn is None:
                self.conn = await self.engine.connect()
            try:
                yield self.conn
            except BaseException:
                await asyncio.shield(self._drop())
                raise

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        async with self.lock:
            conn, self.conn = self.conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
