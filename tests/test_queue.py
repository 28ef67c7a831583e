"""The PostgreSQL job queue: wake-ups at commit, dedupe, delays, priority, leases and dead letters."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text

from shared.db import raw_connect
from shared.queue import service as q
from shared.queue.service import NewJob
from shared.queue.worker import Handler, PermanentJobError, RetryLater, Worker
from tests.conftest import T0


def job(**overrides: object) -> NewJob:
    fields: dict = {"queue": "test", "kind": "k", "payload": {"n": 1}, "run_at": T0}
    fields.update(overrides)
    return NewJob(**fields)


async def test_workers_are_woken_at_commit_not_before(sessionmaker, db_url: str) -> None:
    """NOTIFY is delivered when the enqueuing transaction commits, never for a rolled-back one."""
    listener = await raw_connect(db_url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(q.NOTIFY_CHANNEL, lambda *args: heard.put_nowait(args[-1]))
    try:
        async with sessionmaker() as session:
            async with session.begin():
                await q.enqueue(session, [job(queue="bot")], now=T0)
                await asyncio.sleep(0.2)
                assert heard.empty()
        assert await asyncio.wait_for(heard.get(), 5) == "bot"
        async with sessionmaker() as session:
            await session.begin()
            await q.enqueue(session, [job(queue="callcenter")], now=T0)
            await session.rollback()
        await asyncio.sleep(0.3)
        assert heard.empty()
    finally:
        await listener.close()


async def test_a_live_dedupe_key_is_enqueued_once(sessionmaker) -> None:
    """The same attempt enqueued twice while queued or running exists once."""
    async with sessionmaker() as session, session.begin():
        assert await q.enqueue(session, [job(dedupe_key="call:t1:1"), job(dedupe_key="call:t1:1")]) == 1
        assert await q.enqueue(session, [job(dedupe_key="call:t1:1")]) == 0


async def test_delayed_jobs_wait_and_priority_orders_the_rest(sessionmaker) -> None:
    """A job is not claimable before its run_at; among runnable ones the lowest priority number goes first."""
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(kind="late", run_at=T0 + timedelta(minutes=5)),
                                  job(kind="low", priority=90), job(kind="urgent", priority=0)])
    async with sessionmaker() as session, session.begin():
        claimed = await q.claim(session, queue="test", worker="w", now=T0, lease_s=30, limit=10)
    assert [j.kind for j in claimed] == ["low", "urgent"] or [j.kind for j in claimed] == ["urgent", "low"]
    async with sessionmaker() as session, session.begin():
        assert await q.claim(session, queue="test", worker="w", now=T0, lease_s=30, limit=10) == []
        late = await q.claim(session, queue="test", worker="w", now=T0 + timedelta(minutes=5), lease_s=30)
    assert [j.kind for j in late] == ["late"]


async def test_priority_decides_which_job_a_single_claim_takes(sessionmaker) -> None:
    """With room for one, the emergency job is taken before an older routine one."""
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(kind="routine", priority=90, run_at=T0 - timedelta(minutes=1)),
                                  job(kind="emergency", priority=0)])
    async with sessionmaker() as session, session.begin():
        claimed = await q.claim(session, queue="test", worker="w", now=T0, lease_s=30, limit=1)
    assert [j.kind for j in claimed] == ["emergency"]


async def test_two_claimers_never_take_the_same_job(sessionmaker) -> None:
    """Concurrent claims split the jobs between them (SKIP LOCKED), each job exactly once."""
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(payload={"n": i}) for i in range(50)])

    async def take(name: str) -> list[int]:
        got = []
        for _ in range(20):
            async with sessionmaker() as session, session.begin():
                got += [j.id for j in await q.claim(session, queue="test", worker=name, now=T0, lease_s=30, limit=3)]
        return got

    a, b = await asyncio.gather(take("a"), take("b"))
    assert not set(a) & set(b) and len(a) + len(b) == 50


async def test_expired_leases_return_and_exhausted_jobs_are_dead_lettered(sessionmaker) -> None:
    """A job whose worker vanished runs again after its lease; out of attempts it stays as a dead letter."""
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(max_attempts=2)])
    now = T0
    for attempt in (1, 2):
        async with sessionmaker() as session, session.begin():
            claimed = await q.claim(session, queue="test", worker="dead", now=now, lease_s=10)
            assert [j.attempts for j in claimed] == [attempt]
        async with sessionmaker() as session, session.begin():
            assert await q.reclaim_expired(session, now=now + timedelta(seconds=5)) == 0  # lease still valid
            now += timedelta(seconds=11)
            assert await q.reclaim_expired(session, now=now) == 1
    async with sessionmaker() as session:
        status, error = (await session.execute(text("SELECT status, last_error FROM jobs"))).one()
    assert status == "failed" and "lease expired" in error


async def test_finishing_a_job_someone_else_holds_is_refused(sessionmaker) -> None:
    """A worker whose lease was taken over cannot complete the job (its work must roll back)."""
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job()])
    async with sessionmaker() as session, session.begin():
        (claimed,) = await q.claim(session, queue="test", worker="slow", now=T0, lease_s=1)
    async with sessionmaker() as session, session.begin():
        await q.reclaim_expired(session, now=T0 + timedelta(seconds=2))
        await q.claim(session, queue="test", worker="fast", now=T0 + timedelta(seconds=2), lease_s=30)
    async with sessionmaker() as session, session.begin():
        with pytest.raises(q.LeaseLost):
            await q.complete(session, job_id=claimed.id, worker="slow")


async def test_worker_retries_with_backoff_and_dead_letters_permanent_errors(sessionmaker, clock) -> None:
    """A failing handler is retried later; a permanent error is dead-lettered at once; a rate limit costs no attempt."""
    calls: list[str] = []

    async def flaky(session, claimed) -> None:  # noqa: ANN001
        calls.append(claimed.kind)
        if claimed.kind == "boom":
            raise RuntimeError("network down")
        if claimed.kind == "bad":
            raise PermanentJobError("no such number")
        raise RetryLater(30, "rate limited")

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(kind="boom"), job(kind="bad"), job(kind="slow")])
    worker = Worker(sessionmaker, queue="test", clock=clock,
                    handlers={k: Handler(flaky) for k in ("boom", "bad", "slow")})
    assert await worker.run_once() == 3
    async with sessionmaker() as session:
        rows = {r.kind: r for r in (await session.execute(text("SELECT * FROM jobs"))).all()}
    assert rows["boom"].status == "queued" and rows["boom"].run_at > clock.now()
    assert "network down" in rows["boom"].last_error
    assert rows["bad"].status == "failed" and "no such number" in rows["bad"].last_error
    assert rows["slow"].status == "queued" and rows["slow"].attempts == 0
    assert rows["slow"].run_at == clock.now() + timedelta(seconds=30)


async def test_closing_a_task_cancels_only_its_queued_jobs(sessionmaker) -> None:
    """Cancellation touches the task's queued jobs (of the kinds asked), nothing running and no other task."""
    mine, other = uuid.uuid4(), uuid.uuid4()
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job(kind="call.auto", task_id=mine), job(kind="bot.alert", task_id=mine),
                                  job(kind="call.auto", task_id=other)])
        assert await q.cancel_task_jobs(session, task_id=mine, kinds=["call.auto"]) == 1
        assert await q.cancel_task_jobs(session, task_id=mine) == 1
    async with sessionmaker() as session:
        rows = (await session.execute(text("SELECT task_id, status FROM jobs ORDER BY id"))).all()
    assert [r.status for r in rows] == ["cancelled", "cancelled", "queued"]
