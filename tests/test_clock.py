"""The fast clock (SHOUHU_TIME_SCALE): processes agree on "now"; domain time is compressed, leases are not."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text

from shared.clock import Clock, FrozenClock, ScaledClock, make_clock
from shared.queue import service as q
from shared.queue.service import NewJob
from shared.queue.worker import Handler, RetryLater, Worker
from shared.settings import CommonSettings
from tests.conftest import T0, eventually, warning


class RealTime:
    """A stand-in for time.time that a test moves by hand (no test waits real minutes)."""

    def __init__(self, start: datetime) -> None:
        self.now_s = start.timestamp()

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def test_two_processes_with_the_same_epoch_read_the_same_now() -> None:
    """Clocks built at different moments (two services' start-ups) from the same epoch and scale agree on now."""
    real = RealTime(T0)
    first = ScaledClock(60, T0, real_time=real)
    real.advance(7.5)  # the second process starts later
    second = ScaledClock(60, T0, real_time=real)
    assert first.now() == second.now() == T0 + timedelta(seconds=7.5 * 60)
    real.advance(1)
    assert first.now() == second.now() == T0 + timedelta(seconds=8.5 * 60)


def test_settings_build_the_clock_from_the_environment(monkeypatch) -> None:  # noqa: ANN001
    """SHOUHU_TIME_SCALE and SHOUHU_TIME_EPOCH give every service the same fast clock; scale 1 is wall time."""
    monkeypatch.setenv("SHOUHU_TIME_SCALE", "60")
    monkeypatch.setenv("SHOUHU_TIME_EPOCH", "2026-11-21T02:00:00+00:00")
    clock = CommonSettings().clock()
    assert isinstance(clock, ScaledClock)
    assert clock.scale == 60 and clock.epoch == T0
    assert clock.real_s(10) == 600
    monkeypatch.setenv("SHOUHU_TIME_SCALE", "1")
    wall = CommonSettings().clock()
    assert type(wall) is Clock and wall.real_s(10) == 10
    assert abs((wall.now() - datetime.now(UTC)).total_seconds()) < 5
    assert FrozenClock(T0).real_s(10) == 10 and make_clock(1).scale == 1


async def test_a_60x_lease_lasts_its_real_seconds_while_the_worker_heartbeats(sessionmaker) -> None:  # noqa: ANN001
    """On a 60x clock a 10 s lease is 10 real seconds, and heartbeats keep it: no other worker reclaims a running job."""
    real = RealTime(T0)
    clock = ScaledClock(60, T0, real_time=real)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(session, job) -> None:  # noqa: ANN001
        started.set()
        await release.wait()

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [NewJob(queue="clocktest", kind="slow", payload={}, run_at=clock.now())])
    worker = Worker(sessionmaker, queue="clocktest", clock=clock, handlers={"slow": Handler(slow)},
                    lease_s=10, heartbeat_s=0.05)
    running = asyncio.create_task(worker.run_once())
    try:
        await asyncio.wait_for(started.wait(), 10)

        async def lease_until() -> datetime:
            async with sessionmaker() as session:
                return (await session.execute(text("SELECT lease_expires_at FROM jobs"))).scalar_one()

        first = await lease_until()
        # 10 real seconds: 600 seconds on this clock.
        assert first - clock.now() > timedelta(seconds=590)

        async def reclaimed() -> int:
            async with sessionmaker() as session, session.begin():
                return await q.reclaim_expired(session, now=clock.now())

        real.advance(8)  # most of the lease, in real seconds (8 minutes on the clock)
        assert await reclaimed() == 0
        # The heartbeat pushes the lease out by another 10 real seconds from the clock's now.
        await eventually(lambda: _later(lease_until, first + timedelta(seconds=8 * 60)))
        real.advance(8)  # 16 real seconds since the claim: past the first lease, within the extended one
        assert await reclaimed() == 0
        async with sessionmaker() as session:
            assert (await session.execute(text("SELECT status FROM jobs"))).scalar_one() == "running"
    finally:
        release.set()
        assert await asyncio.wait_for(running, 10) == 1
    async with sessionmaker() as session:
        assert (await session.execute(text("SELECT count(*) FROM jobs"))).scalar_one() == 0


async def _later(read, than: datetime) -> bool:  # noqa: ANN001
    return await read() >= than


async def test_a_stopped_workers_lease_ends_after_its_real_seconds_on_a_fast_clock(sessionmaker) -> None:  # noqa: ANN001
    """A job claimed on a 60x clock whose worker stops beating goes back to the queue after lease_s real seconds."""
    real = RealTime(T0)
    clock = ScaledClock(60, T0, real_time=real)
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [NewJob(queue="clocktest", kind="k", payload={}, run_at=clock.now())])
        claimed = await q.claim(session, queue="clocktest", worker="gone", now=clock.now(), lease_s=clock.real_s(10))
    assert len(claimed) == 1
    real.advance(9)
    async with sessionmaker() as session, session.begin():
        assert await q.reclaim_expired(session, now=clock.now()) == 0
    real.advance(2)
    async with sessionmaker() as session, session.begin():
        assert await q.reclaim_expired(session, now=clock.now()) == 1


async def test_a_rate_limit_retry_waits_real_seconds_and_a_call_window_waits_clock_time(sessionmaker) -> None:  # noqa: ANN001
    """RetryLater's delay is real seconds (scaled onto the clock); with on_clock=True it is clock time as given."""
    real = RealTime(T0)
    clock = ScaledClock(60, T0, real_time=real)

    async def limited(session, job) -> None:  # noqa: ANN001
        raise RetryLater(5, "rate limited")

    async def window(session, job) -> None:  # noqa: ANN001
        raise RetryLater(3600, "outside the call window", on_clock=True)

    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [NewJob(queue="clocktest", kind="limited", payload={}, run_at=clock.now()),
                                  NewJob(queue="clocktest", kind="window", payload={}, run_at=clock.now())])
    worker = Worker(sessionmaker, queue="clocktest", clock=clock,
                    handlers={"limited": Handler(limited), "window": Handler(window)})
    now = clock.now()
    assert await worker.run_once() == 2
    async with sessionmaker() as session:
        rows = dict((await session.execute(text("SELECT kind, run_at FROM jobs"))).all())
    assert rows["limited"] - now == timedelta(seconds=5 * 60)
    assert rows["window"] - now == timedelta(seconds=3600)


async def test_a_two_hour_deadline_passes_in_two_real_minutes_at_60x(db_url: str) -> None:
    """A high-tier task ingested on a 60x clock is breached after 2 real minutes (its 2 h on the clock), not before."""
    from services.dispatcher.app import create_app
    from services.dispatcher.jobs import make_worker
    from services.dispatcher.settings import DispatcherSettings
    from shared.auth.service import create_key
    from shared.db import transaction

    real = RealTime(T0)
    clock = ScaledClock(60, T0, real_time=real)
    settings = DispatcherSettings(DATABASE_URL=db_url, SHOUHU_DISPATCHER_WORKER=False, SHOUHU_KEY_CACHE_TTL_S=0)
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        async with transaction(runtime.sessionmaker) as session:
            _, ingest = await create_key(session, role="ingest", unit="33", name="clock-ingest")
            _, supervisor = await create_key(session, role="supervisor", unit="33", name="clock-supervisor")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dispatcher") as client:
            made = await client.post("/v1/warnings", headers={"Authorization": f"Bearer {ingest}"},
                                     json=warning(signal="transfer_in_progress", occurred_at=clock.now().isoformat()))
            assert made.status_code == 201, made.text
            body = made.json()
            assert body["tier"] == "high"
            assert datetime.fromisoformat(body["due_at"]) == clock.now() + timedelta(hours=2)
            worker = make_worker(runtime.sessionmaker, store=runtime.store, clock=clock, database_url=None)

            async def breached() -> bool:
                await worker.drain()
                task = await client.get(f"/v1/tasks/{body['task_id']}",
                                        headers={"Authorization": f"Bearer {supervisor}"})
                return task.json()["breached"]

            real.advance(119)
            assert not await breached()
            real.advance(2)
            assert await breached()
