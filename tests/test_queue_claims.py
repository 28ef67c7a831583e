"""Claims by people (seat operators): urgency then deadline, only inside the seat's unit, one index probe each."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import text

from shared.contracts import PRIORITY
from shared.queue import service as q
from shared.queue.service import NewJob
from tests.conftest import T0

QUEUE, KIND = "callcenter", "call.operator"


def operator_job(scope: str | None, *, priority: int = PRIORITY["medium"], due_in_min: int = 60,
                 run_at_min: int = 0, name: str = "") -> NewJob:
    """An operator call of a unit, due `due_in_min` after T0, runnable `run_at_min` after T0."""
    return NewJob(queue=QUEUE, kind=KIND, payload={"name": name or scope}, run_at=T0 + timedelta(minutes=run_at_min),
                  priority=priority, task_id=uuid.uuid4(), scope=scope, due_at=T0 + timedelta(minutes=due_in_min))


async def claimable(sessionmaker, unit: str, *, minutes: int = 0) -> list[str]:  # noqa: ANN001
    """What a seat of `unit` would take, in claim order (claimed one by one, then rolled back)."""
    names = []
    async with sessionmaker() as session, session.begin():
        for _ in range(100):
            got = await q.claim(session, queue=QUEUE, kinds=[KIND], worker=f"seat:{unit}", lease_s=60,
                                now=T0 + timedelta(minutes=minutes), scope_prefix=unit)
            if not got:
                break
            names.append(got[0].payload["name"])
        await session.rollback()
    return names


async def test_a_seat_takes_emergencies_then_tier_then_the_earliest_deadline(sessionmaker) -> None:
    """Emergency > high > medium > low whatever the deadlines; within a tier the earliest deadline first."""
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [
            operator_job("330106", priority=PRIORITY["low"], due_in_min=5, name="low"),
            operator_job("330106", priority=PRIORITY["medium"], due_in_min=10, name="medium"),
            operator_job("330106", priority=PRIORITY["high"], due_in_min=90, name="high-late"),
            operator_job("330106", priority=PRIORITY["high"], due_in_min=30, name="high-soon"),
            operator_job("330106", priority=PRIORITY["emergency"], due_in_min=600, name="emergency"),
            operator_job("330106", priority=PRIORITY["medium"], due_in_min=8, name="medium-sooner"),
        ], now=T0)
    assert await claimable(sessionmaker, "330106") == [
        "emergency", "high-soon", "high-late", "medium-sooner", "medium", "low"]


async def test_a_seat_takes_only_the_jobs_of_its_unit(sessionmaker) -> None:
    """District seats get their district only; a city seat its districts and city-scoped jobs; a province all."""
    scopes = ["330106", "33010601", "330108", "3301", "3302", "330203", "33", "320102", "32"]
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [operator_job(s, due_in_min=i) for i, s in enumerate(scopes)], now=T0)
        # A worker-run job of the same queue (no scope) is never a person's.
        await q.enqueue(session, [NewJob(queue=QUEUE, kind=KIND, payload={"name": "worker"}, run_at=T0)], now=T0)
    assert await claimable(sessionmaker, "330106") == ["330106", "33010601"]
    assert await claimable(sessionmaker, "330108") == ["330108"]
    assert await claimable(sessionmaker, "330102") == []
    assert await claimable(sessionmaker, "3301") == ["330106", "33010601", "330108", "3301"]
    assert await claimable(sessionmaker, "3302") == ["3302", "330203"]
    assert await claimable(sessionmaker, "33") == ["330106", "33010601", "330108", "3301", "3302", "330203", "33"]
    assert await claimable(sessionmaker, "32") == ["320102", "32"]
    # Units of other lengths keep a correct path: the nationwide key ("all"), and a prefix between levels.
    assert await claimable(sessionmaker, "") == scopes
    assert await claimable(sessionmaker, "33010") == ["330106", "33010601", "330108"]
    assert await claimable(sessionmaker, "3301060") == ["33010601"]


async def test_a_job_waiting_for_its_run_at_is_not_claimed_before_it(sessionmaker) -> None:
    """A callback due later (an emergency, even) is skipped until its run_at; what is runnable now is taken."""
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [
            operator_job("330106", priority=PRIORITY["emergency"], run_at_min=30, name="callback-at-t30"),
            operator_job("330106", priority=PRIORITY["low"], name="low-now"),
        ], now=T0)
    assert await claimable(sessionmaker, "330106") == ["low-now"]
    assert await claimable(sessionmaker, "3301", minutes=29) == ["low-now"]
    assert await claimable(sessionmaker, "33", minutes=30) == ["callback-at-t30", "low-now"]


async def test_a_job_handed_to_another_unit_is_claimed_there(sessionmaker) -> None:
    """A supervisor's hand-over (update_task_jobs with a new scope) moves the job between the units' queues."""
    job = operator_job("330106", name="handed")
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [job], now=T0)
        await q.update_task_jobs(session, task_id=job.task_id, kinds=[KIND], scope="3301")
    assert await claimable(sessionmaker, "330106") == []
    assert await claimable(sessionmaker, "3301") == ["handed"]
    async with sessionmaker() as session, session.begin():
        await q.update_task_jobs(session, task_id=job.task_id, kinds=[KIND], scope="330108")
    assert await claimable(sessionmaker, "330108") == ["handed"]
    assert await claimable(sessionmaker, "330106") == [] and await claimable(sessionmaker, "3302") == []


async def test_a_claim_reads_a_few_index_entries_not_the_whole_queue(sessionmaker) -> None:
    """With 3,000 jobs over 30 districts (waiting emergencies ahead), a district claim reads a handful of rows."""
    async with sessionmaker() as session, session.begin():
        await session.execute(text(
            "INSERT INTO jobs (queue, kind, payload, run_at, priority, task_id, scope, due_at)"
            " SELECT :queue, :kind, '{}', CAST(:t0 AS timestamptz) + CASE WHEN i % 7 = 0 THEN interval '1 hour'"
            " ELSE interval '0' END, CASE WHEN i % 7 = 0 THEN 0 ELSE 50 END, gen_random_uuid(),"
            " '3301' || lpad((i % 30)::text, 2, '0'), CAST(:t0 AS timestamptz) + i * interval '1 second'"
            " FROM generate_series(1, 3000) AS i"), {"queue": QUEUE, "kind": KIND, "t0": T0})
        await session.execute(text("ANALYZE jobs"))
    async with sessionmaker() as session, session.begin():
        (got,) = await q.claim(session, queue=QUEUE, kinds=[KIND], worker="seat:x", lease_s=60, now=T0,
                               scope_prefix="330107")
        assert got.scope == "330107" and got.run_at == T0  # not a waiting emergency
        read = (await session.execute(text(
            "SELECT pg_stat_get_xact_tuples_returned(CAST('ix_jobs_claim_district' AS regclass)) AS entries,"
            " pg_stat_get_xact_numscans(CAST('jobs' AS regclass)) AS table_scans"))).one()
    # The district's 14 waiting emergencies come first in the index and are stepped over inside it (run_at
    # is in it): one entry returned. Walking the queue in order with a filter would return hundreds.
    assert 1 <= read.entries <= 3 and read.table_scans == 0, read


async def test_the_bench_loads_operator_calls_a_seat_can_claim_and_read(db_url: str, sessionmaker) -> None:
    """`shouhu bench calls` fills the queue with SQL: every job is a valid OperatorCall of an open task in its unit."""
    from bench.calls import CLAIM_DISTRICTS, _fill_operator_queue, _server_timing_ms
    from shared import contracts
    from shared.contracts import dispatcher as dispatcher_contract

    added, queued, _ = await _fill_operator_queue(db_url, want=400, first_phone=0)
    assert (added, queued) == (400, 400)
    assert (await _fill_operator_queue(db_url, want=400, first_phone=400))[:2] == (0, 400)  # topped up only
    district = CLAIM_DISTRICTS[7]
    async with sessionmaker() as session, session.begin():
        got = await q.claim(session, queue=QUEUE, kinds=[KIND], worker="seat:b", lease_s=60,
                            now=T0 + timedelta(days=400), scope_prefix=district)
        call = contracts.OperatorCall.of(got[0])
        brief = await dispatcher_contract.task_brief(session, call.task_id)
        await session.rollback()
    assert got[0].scope == district and brief is not None and brief.status == "open" and brief.region_code == district
    assert _server_timing_ms(b"HTTP/1.1 200 OK\r\nserver-timing: db;dur=2, claim;dur=0.412\r\n\r\n") == 0.412


async def test_a_claim_gives_urgent_jobs_the_short_lease_in_the_same_statement(sessionmaker) -> None:
    """With short_lease, a high-tier (or more urgent) claim is leased for the short time, any other for lease_s."""
    async with sessionmaker() as session, session.begin():
        await q.enqueue(session, [operator_job("330106", priority=PRIORITY["high"], name="high"),
                                  operator_job("330106", priority=PRIORITY["emergency"], name="emergency"),
                                  operator_job("330106", priority=PRIORITY["medium"], name="medium")], now=T0)
    leases = {}
    async with sessionmaker() as session, session.begin():
        for _ in range(3):
            (got,) = await q.claim(session, queue=QUEUE, kinds=[KIND], worker="seat:x", lease_s=600, now=T0,
                                   scope_prefix="330106", short_lease=(PRIORITY["high"], 300))
            leases[got.payload["name"]] = (got.lease_expires_at - T0).total_seconds()
    assert leases == {"emergency": 300, "high": 300, "medium": 600}
