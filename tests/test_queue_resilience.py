"""The queue under crashes and restarts: wake-ups mid-round, heartbeats, reclaim in place, shutdown, batches."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from shared.clock import Clock
from shared.queue import service as q
from shared.queue.service import NewJob
from shared.queue.worker import Handler, Worker
from tests.conftest import T0


def job(**overrides: object) -> NewJob:
    fields: dict = {"queue": "test", "kind": "k", "payload": {"n": 1}, "run_at": T0}
    fields.update(overrides)
    return NewJob(**fields)


async def _rows(sessionmaker, sql: str = "SELECT * FROM jobs ORDER BY id") -> list:  # noqa: ANN001
    async with sessionmaker() as session:
        return list((await session.execute(text(sql))).all())


async def _stop(worker: Worker, task: asyncio.Task) -> None:
    worker.stop()
    await asyncio.wait_for(task, 15)


async def test_a_notification_arriving_mid_round_starts_the_next_round(sessionmaker, db_url: str, clock) -> None:
    """A job enqueued while a round runs is taken at once after it, not at the next poll (30 s here)."""
    ran: dict[str, float] = {}
    worker: Worker

    async def first(session, claimed) -> None:  # noqa: ANN001
        await worker.listening.wait()
        async with sessionmaker() as other, other.begin():
            await q.enqueue(other, [job(kind="second")], now=clock.now())
        ran["enqueued"] = time.monotonic()
        await asyncio.sleep(0.3)  # the NOTIFY arrives while this round is still running

    async def second(session, claimed) -> None:  # noqa: ANN001
        ran["second"] = time.monotonic()

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(kind="first")], now=clock.now())
    worker = Worker(sessionmaker, queue="test", clock=clock, database_url=db_url, poll_interval_s=30,
                    handlers={"first": Handler(first), "second": Handler(second)})
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(100):
            if "second" in ran:
                break
            await asyncio.sleep(0.05)
        assert "second" in ran, "the wake-up that came during the round was thrown away"
        assert ran["second"] - ran["enqueued"] < 3
    finally:
        await _stop(worker, task)


async def test_a_job_running_past_its_lease_is_not_run_twice(sessionmaker) -> None:
    """Heartbeats keep a 1 s lease alive through a 3 s handler while another worker sweeps and claims every 0.1 s."""
    clock = Clock()  # real time: the lease must really run out without the heartbeat
    starts: list[str] = []

    async def slow(claimed) -> None:  # noqa: ANN001
        starts.append(claimed.kind)
        await asyncio.sleep(3)

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(kind="slow", run_at=clock.now())])
    holder = Worker(sessionmaker, queue="test", clock=clock, name="holder", lease_s=1,
                    handlers={"slow": Handler(slow, transactional=False)})
    rival = Worker(sessionmaker, queue="test", clock=clock, name="rival", lease_s=1, poll_interval_s=0.1,
                   reclaim_every_s=0.1, handlers={"slow": Handler(slow, transactional=False)})
    first_round = asyncio.create_task(holder.run_once())
    while not starts:
        await asyncio.sleep(0.01)
    rival_task = asyncio.create_task(rival.run())
    try:
        assert await first_round == 1
    finally:
        await _stop(rival, rival_task)
    assert starts == ["slow"]
    assert await _rows(sessionmaker) == []  # the holder finished it: its lease was never lost


async def test_a_job_whose_lease_a_heartbeat_finds_taken_does_not_count(sessionmaker) -> None:
    """When another worker took the job meanwhile, the handler's writes roll back and the job stays theirs."""
    clock = Clock()
    taken = asyncio.Event()

    async def handler(session, claimed) -> None:  # noqa: ANN001
        await q.enqueue(session, [job(queue="out", kind="effect", run_at=clock.now())])
        async with sessionmaker() as other, other.begin():  # the lease expired and someone else claimed it
            await other.execute(text("UPDATE jobs SET locked_by = 'thief' WHERE id = :id"), {"id": claimed.id})
        taken.set()
        await asyncio.sleep(0.5)  # long enough for a heartbeat (every 0.1 s) to notice

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(kind="k", run_at=clock.now())])
    worker = Worker(sessionmaker, queue="test", clock=clock, lease_s=0.3, handlers={"k": Handler(handler)})
    assert await worker.run_once() == 1
    rows = await _rows(sessionmaker, "SELECT queue, status, locked_by FROM jobs ORDER BY id")
    assert [tuple(r) for r in rows] == [("test", "running", "thief")]


async def test_a_reclaimed_job_keeps_its_place(sessionmaker) -> None:
    """A dead worker's job comes back with its run_at and priority, and is taken before jobs queued after it."""
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(kind="held", priority=50, run_at=T0 - timedelta(minutes=1))])
    async with sessionmaker() as session, session.begin():
        (held,) = await q.claim(session, queue="test", worker="dead", now=T0, lease_s=10)
        await q.enqueue(session, [job(kind="later", priority=50, run_at=T0 + timedelta(seconds=i)) for i in range(5)])
    async with sessionmaker() as session, session.begin():
        assert await q.reclaim_expired(session, now=T0 + timedelta(seconds=11)) == 1
    (row,) = await _rows(sessionmaker, "SELECT run_at, priority, status, attempts FROM jobs WHERE kind = 'held'")
    assert (row.run_at, row.priority, row.status, row.attempts) == (T0 - timedelta(minutes=1), 50, "queued", 1)
    async with sessionmaker() as session, session.begin():
        (first,) = await q.claim(session, queue="test", worker="alive", now=T0 + timedelta(seconds=12), lease_s=10)
    assert first.id == held.id


async def test_shutdown_releases_held_jobs_within_the_grace(sessionmaker, clock) -> None:
    """stop(): a job that ends within the grace is finished; the rest go back queued, in place, attempt uncounted."""
    started: list[str] = []

    async def quick(claimed) -> None:  # noqa: ANN001
        started.append("quick")
        await asyncio.sleep(0.2)

    async def stuck(claimed) -> None:  # noqa: ANN001
        started.append("stuck")
        await asyncio.Event().wait()  # never ends by itself

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(kind="quick"), job(kind="stuck", priority=7), job(kind="stuck", priority=9)])
    worker = Worker(sessionmaker, queue="test", clock=clock, grace_s=1.0,
                    handlers={"quick": Handler(quick, transactional=False), "stuck": Handler(stuck, transactional=False)})
    task = asyncio.create_task(worker.run())
    while len(started) < 3:
        await asyncio.sleep(0.01)
    began = time.monotonic()
    worker.stop()
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - began < 2.0  # the grace (1 s) and the release, not the stuck handlers
    rows = await _rows(sessionmaker, "SELECT kind, status, attempts, priority, run_at, locked_by FROM jobs ORDER BY id")
    assert [tuple(r) for r in rows] == [("stuck", "queued", 0, 7, T0, None), ("stuck", "queued", 0, 9, T0, None)]


async def test_a_failing_job_in_a_savepoint_batch_fails_alone(sessionmaker, clock) -> None:
    """In one batch transaction, the failing job's writes roll back and it is retried; the others commit once."""
    async def handler(session, claimed) -> None:  # noqa: ANN001
        await q.enqueue(session, [job(queue="out", kind="effect", payload=claimed.payload)])
        if claimed.payload["n"] == 2:
            raise RuntimeError("bad row")

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(payload={"n": n}) for n in range(5)])
    worker = Worker(sessionmaker, queue="test", clock=clock, handlers={"k": Handler(handler, batch=True)})
    assert await worker.run_once() == 5
    effects = await _rows(sessionmaker, "SELECT payload FROM jobs WHERE queue = 'out' ORDER BY id")
    assert sorted(r.payload["n"] for r in effects) == [0, 1, 3, 4]
    (left,) = await _rows(sessionmaker, "SELECT payload, status, last_error FROM jobs WHERE queue = 'test'")
    assert left.payload == {"n": 2} and left.status == "queued" and "bad row" in left.last_error


async def test_external_jobs_are_finished_together_and_a_failure_stays_alone(sessionmaker, clock) -> None:
    """One DELETE finishes a round's external jobs; the one that failed is given back, each handler ran once."""
    ran: list[int] = []

    async def handler(claimed) -> None:  # noqa: ANN001
        ran.append(claimed.payload["n"])
        if claimed.payload["n"] == 3:
            raise RuntimeError("provider down")

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(payload={"n": n}) for n in range(6)])
    worker = Worker(sessionmaker, queue="test", clock=clock, handlers={"k": Handler(handler, transactional=False)})
    assert await worker.run_once() == 6
    assert sorted(ran) == list(range(6))
    (left,) = await _rows(sessionmaker, "SELECT payload, status, attempts FROM jobs")
    assert left.payload == {"n": 3} and left.status == "queued" and left.attempts == 1
    assert await worker.run_once() == 0  # its retry waits for its backoff; nothing else is left to run
    assert sorted(ran) == list(range(6))


async def test_a_cancelled_worker_still_gives_its_jobs_back(sessionmaker) -> None:
    """Cancelling run() (a service cancelling its tasks) releases what it held instead of waiting for the lease."""
    clock = Clock()
    started = asyncio.Event()

    async def stuck(claimed) -> None:  # noqa: ANN001
        started.set()
        await asyncio.Event().wait()

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(kind="stuck", run_at=datetime.now(UTC))])
    worker = Worker(sessionmaker, queue="test", clock=clock, handlers={"stuck": Handler(stuck, transactional=False)})
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    (row,) = await _rows(sessionmaker, "SELECT status, locked_by, attempts FROM jobs")
    assert tuple(row) == ("queued", None, 0)


async def test_a_batch_with_a_job_taken_over_commits_the_others_once(sessionmaker, clock) -> None:
    """A lease lost inside a savepoint batch rolls the batch back; rerun one by one, the others commit exactly once."""
    async def handler(session, claimed) -> None:  # noqa: ANN001
        await q.enqueue(session, [job(queue="out", kind="effect", payload=claimed.payload)])
        if claimed.payload["n"] == 1:
            async with sessionmaker() as other, other.begin():  # its lease expired and another worker took it
                await other.execute(text("UPDATE jobs SET locked_by = 'thief' WHERE id = :id"), {"id": claimed.id})

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(payload={"n": n}) for n in range(5)])
    worker = Worker(sessionmaker, queue="test", clock=clock, handlers={"k": Handler(handler, batch=True)})
    assert await worker.run_once() == 5
    effects = await _rows(sessionmaker, "SELECT payload FROM jobs WHERE queue = 'out' ORDER BY id")
    assert sorted(r.payload["n"] for r in effects) == [0, 2, 3, 4]
    (left,) = await _rows(sessionmaker, "SELECT payload, locked_by FROM jobs WHERE queue = 'test'")
    assert left.payload == {"n": 1} and left.locked_by == "thief"


async def test_a_slow_job_does_not_hold_back_the_jobs_queued_after_it(sessionmaker, db_url: str) -> None:
    """A job stuck on its provider (a dial up to its deadline) holds its own slot only: a job queued after it runs."""
    clock = Clock()
    slow_started, release = asyncio.Event(), asyncio.Event()
    ran: dict[str, float] = {}

    async def slow(claimed) -> None:  # noqa: ANN001
        slow_started.set()
        await release.wait()

    async def fast(claimed) -> None:  # noqa: ANN001
        ran["fast"] = time.monotonic()

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(kind="slow", run_at=clock.now())])
    worker = Worker(sessionmaker, queue="test", clock=clock, database_url=db_url, poll_interval_s=0.2, concurrency=4,
                    handlers={"slow": Handler(slow, transactional=False), "fast": Handler(fast, transactional=False)})
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(slow_started.wait(), 10)
        async with sessionmaker() as session, session.begin():
            await q.enqueue(session, [job(kind="fast", run_at=clock.now())])
        enqueued = time.monotonic()
        for _ in range(100):
            if "fast" in ran:
                break
            await asyncio.sleep(0.05)
        assert "fast" in ran, "the job queued after a slow one waited for the slow one to end"
        assert ran["fast"] - enqueued < 3
    finally:
        release.set()
        await _stop(worker, task)
    rows = await _rows(sessionmaker)
    assert rows == [], "both jobs finished and left the queue"


async def test_claiming_while_jobs_run_never_runs_more_than_the_concurrency(sessionmaker, db_url: str) -> None:
    """Claims go on while jobs run, but never more handlers at once than `concurrency`; every job runs once."""
    clock = Clock()
    now_running, most, done = 0, 0, []

    async def handler(claimed) -> None:  # noqa: ANN001
        nonlocal now_running, most
        now_running += 1
        most = max(most, now_running)
        await asyncio.sleep(0.05 + 0.1 * (claimed.payload["n"] % 3))
        now_running -= 1
        done.append(claimed.payload["n"])

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(payload={"n": n}, run_at=clock.now()) for n in range(30)])
    worker = Worker(sessionmaker, queue="test", clock=clock, database_url=db_url, poll_interval_s=0.2, concurrency=3,
                    batch_size=5, handlers={"k": Handler(handler, transactional=False)})
    task = asyncio.create_task(worker.run())
    try:
        for _ in range(200):
            if len(done) == 30:
                break
            await asyncio.sleep(0.05)
    finally:
        await _stop(worker, task)
    assert sorted(done) == list(range(30))
    assert most == 3
    assert await _rows(sessionmaker) == []
