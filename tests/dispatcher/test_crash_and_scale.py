"""Nothing lost, nothing doubled: a worker killed mid-job, and two dispatcher processes on one database."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from services.dispatcher.tasks.plans import RESULT_KIND
from shared.queue.service import NewJob, enqueue
from tests.conftest import ROOT, free_port, warning

pytestmark = pytest.mark.slow


async def _result_job(dispatcher, task_id: str) -> None:  # noqa: ANN001
    async with dispatcher.sessionmaker() as session, session.begin():
        await enqueue(session, [NewJob(queue="dispatcher", kind=RESULT_KIND, run_at=dispatcher.clock.now(),
                                       payload={"task_id": task_id, "channel": "auto_call", "attempt": 1,
                                                "result": "busy"})])


async def test_worker_killed_mid_job_loses_nothing_and_doubles_nothing(dispatcher, tmp_path: Path) -> None:
    """SIGKILL inside a job's transaction: the job runs again after its lease, and its effect happens once."""
    answer = (await dispatcher.client.post("/v1/warnings", json=warning(signal="fraud_call_received"),
                                           headers=await dispatcher.headers())).json()
    await _result_job(dispatcher, answer["task_id"])
    marker = tmp_path / "mid-job"
    proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.crashing_worker", dispatcher.db_url, str(marker),
                             "1.0"], cwd=ROOT)
    try:
        for _ in range(300):
            if marker.exists() or proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), "the worker never reached the middle of the job"
        # The handler's writes exist only inside the doomed transaction.
        assert len(await dispatcher.jobs(task_id=answer["task_id"], kind="call.auto")) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The killed transaction rolled back; the job is still leased to the dead worker.
    job = (await dispatcher.jobs(kind=RESULT_KIND))[0]
    assert job["status"] == "running" and job["attempts"] == 1
    # Before the lease runs out nobody else may take it; after, a live worker does.
    assert await dispatcher.run_dispatcher_jobs() == 0
    dispatcher.clock.set(job["lease_expires_at"])
    dispatcher.clock.advance(seconds=1)
    # Only the result job is counted: moving the clock to the lease's (wall-clock) expiry also makes the
    # task's plan steps due, and the jobs they make (a visit request) are the dispatcher's too.
    results_only = dispatcher.worker()
    results_only.handlers = {RESULT_KIND: results_only.handlers[RESULT_KIND]}
    assert await results_only.drain() == 1
    assert await dispatcher.jobs(kind=RESULT_KIND) == []
    calls = await dispatcher.jobs(task_id=answer["task_id"], kind="call.auto")
    assert [c["payload"]["attempt"] for c in calls] == [1, 2]  # exactly one retry, not two
    async with dispatcher.sessionmaker() as session:
        results = (await session.execute(text("SELECT count(*) FROM audit_log WHERE action = 'task.channel_result'")
                                         )).scalar_one()
    assert results == 1


def _jobs_done(metrics: str) -> float:
    pattern = r'shouhu_jobs_total\{kind="task.channel_result",queue="dispatcher",result="done"\} ([0-9.e+]+)'
    match = re.search(pattern, metrics)
    return float(match.group(1)) if match else 0.0


async def test_two_dispatcher_processes_share_the_work_without_doubling(dispatcher, sessionmaker) -> None:  # noqa: ANN001
    """Two dispatcher servers on one database: one case per person, one record per key, each job done once."""
    ports = [free_port(), free_port()]
    env = {**os.environ, "DATABASE_URL": dispatcher.db_url, "SHOUHU_LOG_LEVEL": "WARNING",
           "SHOUHU_WORKER_POLL_INTERVAL_S": "0.2"}
    procs = [subprocess.Popen([sys.executable, "-m", "shouhu.cli", "serve", "dispatcher", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL) for port in ports]
    headers = await dispatcher.headers()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            deadline = time.monotonic() + 60
            for port in ports:
                while (await _ready(client, port)) is False:
                    assert time.monotonic() < deadline, "a dispatcher did not start"
                    await asyncio.sleep(0.2)
            # 100 people, each warned twice, the same records sent to both servers at once.
            records = [warning(phone=f"1360000{i % 100:04d}", source_ref=f"ref-{i}") for i in range(200)]
            sends = [client.post(f"http://127.0.0.1:{port}/v1/warnings", json=r, headers=headers)
                     for r in records for port in ports]
            replies = await asyncio.gather(*sends)
            assert sorted({r.status_code for r in replies}) == [200, 201]
            assert sum(r.status_code == 201 for r in replies) == 200
            async with dispatcher.sessionmaker() as session:
                counts = (await session.execute(text(
                    "SELECT (SELECT count(*) FROM cases), (SELECT count(*) FROM tasks),"
                    " (SELECT count(*) FROM warnings)"))).one()
            assert tuple(counts) == (100, 100, 200)
            # Now a result per task for the dispatchers' workers to share.
            async with dispatcher.sessionmaker() as session:
                task_ids = (await session.execute(text("SELECT id FROM tasks"))).scalars().all()
            async with dispatcher.sessionmaker() as session, session.begin():
                await enqueue(session, [NewJob(queue="dispatcher", kind=RESULT_KIND, run_at=dispatcher.clock.now(),
                                               payload={"task_id": str(t), "channel": "auto_call", "attempt": 1,
                                                        "result": "busy"}) for t in task_ids])
            for _ in range(200):
                if not await dispatcher.jobs(kind=RESULT_KIND):
                    break
                await asyncio.sleep(0.1)
            assert await dispatcher.jobs(kind=RESULT_KIND) == []
            done = [_jobs_done((await client.get(f"http://127.0.0.1:{p}/metrics")).text) for p in ports]
            # Both running servers connect as the services' role (not a superuser), though DATABASE_URL is the owner's.
            async with sessionmaker() as session:
                sessions = (await session.execute(text(
                    "SELECT a.usename, r.rolsuper FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid"
                    " WHERE a.datname = current_database() AND a.application_name = 'shouhu-dispatcher'"))).all()
            assert len(sessions) >= 2 and {tuple(s) for s in sessions} == {("shouhu_service", False)}, sessions
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert sum(done) == 100
    assert all(d > 0 for d in done), f"one process did all the work: {done}"
    async with dispatcher.sessionmaker() as session:
        retries = (await session.execute(text(
            "SELECT count(*) FROM jobs WHERE kind = 'call.auto' AND (payload->>'attempt')::int = 2"))).scalar_one()
    assert retries == 100


async def _ready(client: httpx.AsyncClient, port: int) -> bool:
    try:
        return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    except httpx.TransportError:
        return False
