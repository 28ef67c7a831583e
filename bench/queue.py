"""`shouhu bench queue`: our job queue (shared/queue) against pgqueuer 1.6 on the same server, in one run.

Both queues get a throwaway database (created, migrated for ours, pgqueuer's
own tables installed by its `Queries.install`, dropped after), a no-op
handler, and the same batch size. Phases, interleaved ours/peer so that noise
from other processes falls on both:

- enqueue: N jobs in transactions of 1,000 (ours: `enqueue` in a SQLAlchemy
  transaction; pgqueuer: `Queries.enqueue` with lists on one asyncpg connection).
- drain: one worker takes the N queued jobs to done (ours: `Worker.drain`,
  external no-op handler, finished in one DELETE per batch; pgqueuer:
  `QueueManager.run(mode=drain)` over one asyncpg connection, as its README
  sets it up). Also ours with a transactional handler in savepoint batches.
- latency: jobs enqueued steadily at 500 jobs/s, one transaction each, by a
  producer in a process of its own (plain asyncpg for both, synchronous_commit
  off in its sessions), into a running worker; latency from the enqueuing
  COMMIT's acknowledgement to the handler starting (wall clock, same machine).
  The first 50 are warm-up.
- reclaim: a worker in a subprocess takes 10 jobs and hangs in them; it is
  killed with SIGKILL; the figure is the time from the kill to the last of its
  jobs starting on a worker that was already running. Ours with the services'
  lease (10 s, heartbeats every lease/3); pgqueuer with its default
  heartbeat_timeout (30 s), measured once and only without --quick.

Medians of 3 (the latency phase and the peer's reclaim run once).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from bench.ingest import _percentile, _Report, _with_admin, bench_audit_key, bench_database, machine_idle_note
from shared.clock import Clock
from shared.db import make_engine, make_sessionmaker, raw_connect
from shared.queue import service as q
from shared.queue.worker import Handler, Worker

QUEUE = "benchq"
BATCH = 10  # pgqueuer's default batch size; ours gets the same
RATE_PER_S = 500
WARMUP_JOBS = 50
HELD = 10
# Enough for 500 commits/s on a busy machine (each enqueue on its own task, one connection each).
PRODUCER_CONNECTIONS = 16


def _now() -> datetime:
    return datetime.now(UTC)


def _engine(db_url: str, pool_size: int = 4) -> Any:
    return make_engine(db_url, pool_size=pool_size, application_name="shouhu-bench-queue", audit_key=bench_audit_key())


async def _vacuum(db_url: str) -> None:
    """Each phase starts from tables without the previous one's dead rows."""
    await _with_admin(db_url, lambda a: a.execute("VACUUM ANALYZE"))


# ---- ours ----------------------------------------------------------------------------------------


async def _ours_enqueue(sessionmaker: Any, n: int, kind: str) -> float:
    now = _now()
    began = time.perf_counter()
    for start in range(0, n, 1000):
        async with sessionmaker() as session, session.begin():
            await q.enqueue(session, [q.NewJob(queue=QUEUE, kind=kind, payload={"i": i}, run_at=now)
                                      for i in range(start, min(n, start + 1000))], now=now)
    return n / (time.perf_counter() - began)


async def _ours_drain(db_url: str, n: int, *, transactional: bool) -> tuple[float, float]:
    engine = _engine(db_url)
    sessionmaker = make_sessionmaker(engine)
    done = 0
    try:
        enqueue_per_s = await _ours_enqueue(sessionmaker, n, "noop")

        if transactional:
            async def noop_tx(session: Any, job: q.ClaimedJob) -> None:
                nonlocal done
                done += 1
            handler = Handler(noop_tx, transactional=True, batch=True)
        else:
            async def noop(job: q.ClaimedJob) -> None:
                nonlocal done
                done += 1
            handler = Handler(noop, transactional=False)
        worker = Worker(sessionmaker, queue=QUEUE, handlers={"noop": handler}, clock=Clock(), batch_size=BATCH,
                        concurrency=BATCH)
        began = time.perf_counter()
        await worker.drain(max_rounds=10 * n)
        elapsed = time.perf_counter() - began
    finally:
        await engine.dispose()
    if done != n:
        raise RuntimeError(f"ours drained {done} of {n} jobs")
    return enqueue_per_s, n / elapsed


async def _ours_latency(db_url: str, total: int) -> tuple[list[float], float]:
    engine = _engine(db_url)
    sessionmaker = make_sessionmaker(engine)
    started: dict[int, float] = {}
    all_in = asyncio.Event()

    async def record(job: q.ClaimedJob) -> None:
        started[job.payload["i"]] = time.time()
        if len(started) == total:
            all_in.set()

    worker = Worker(sessionmaker, queue=QUEUE, handlers={"lat": Handler(record, transactional=False)}, clock=Clock(),
                    database_url=db_url, batch_size=20, concurrency=20)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(worker.listening.wait(), 10)
        await asyncio.sleep(1.0)  # as for the peer
        sent, rate = await _produce("ours", db_url, total)
        await asyncio.wait_for(all_in.wait(), 60)
    finally:
        worker.stop()
        await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()
    return _latencies_ms(started, sent, total), rate


async def _ours_producer(db_url: str, total: int) -> tuple[dict[int, float], float]:
    """The same statement shape as `enqueue` (insert, NOTIFY delivered at commit), on plain asyncpg.

    As lean as the peer's producer: SQLAlchemy's per-transaction work in a
    producer at 500 commits/s saturates its own process on this machine, and
    the time between "just before COMMIT" and the COMMIT would then be the
    producer's backlog, not the queue's latency.
    """
    pool = await _pool(db_url)
    sent: dict[int, float] = {}
    insert = ("WITH inserted AS (INSERT INTO jobs (queue, kind, payload, run_at) VALUES ($1, 'lat', $2::jsonb, now())"
              " RETURNING queue) SELECT pg_notify($3, queue) FROM inserted")

    async def enqueue_one(i: int) -> None:
        async with pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute(insert, QUEUE, orjson.dumps({"i": i}).decode(), q.NOTIFY_CHANNEL)
            sent[i] = time.time()  # the commit is acknowledged

    try:
        return sent, await _steady(enqueue_one, total)
    finally:
        await pool.close()


# ---- pgqueuer ------------------------------------------------------------------------------------


async def _peer_install(db_url: str) -> None:
    from pgqueuer import Queries

    conn = await raw_connect(db_url)
    try:
        await Queries.from_asyncpg_connection(conn).install()
    finally:
        await conn.close()


async def _peer_drain(db_url: str, n: int) -> tuple[float, float]:
    from pgqueuer import Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    producer, consumer = await raw_connect(db_url), await raw_connect(db_url)
    done = 0
    try:
        queries = Queries.from_asyncpg_connection(producer)
        began = time.perf_counter()
        for start in range(0, n, 1000):
            size = min(n, start + 1000) - start
            await queries.enqueue(["noop"] * size, [str(i).encode() for i in range(start, start + size)], [0] * size)
        enqueue_per_s = n / (time.perf_counter() - began)
        qm = QueueManager(Queries.from_asyncpg_connection(consumer))

        @qm.entrypoint("noop")
        async def noop(job: Any) -> None:
            nonlocal done
            done += 1

        began = time.perf_counter()
        await qm.run(mode=QueueExecutionMode.drain, batch_size=BATCH)
        elapsed = time.perf_counter() - began
    finally:
        await producer.close()
        await consumer.close()
    if done != n:
        raise RuntimeError(f"pgqueuer drained {done} of {n} jobs")
    return enqueue_per_s, n / elapsed


async def _peer_latency(db_url: str, total: int) -> tuple[list[float], float]:
    from pgqueuer import Queries, QueueManager

    consumer = await raw_connect(db_url)
    started: dict[int, float] = {}
    all_in = asyncio.Event()
    qm = QueueManager(Queries.from_asyncpg_connection(consumer))

    @qm.entrypoint("lat")
    async def record(job: Any) -> None:
        started[int(job.payload)] = time.time()
        if len(started) == total:
            all_in.set()

    task = asyncio.create_task(qm.run(batch_size=BATCH))
    try:
        await asyncio.sleep(1.0)  # its listener is set up inside run()
        sent, rate = await _produce("peer", db_url, total)
        await asyncio.wait_for(all_in.wait(), 60)
    finally:
        qm.shutdown.set()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.close()
    return _latencies_ms(started, sent, total), rate


async def _peer_producer(db_url: str, total: int) -> tuple[dict[int, float], float]:
    from pgqueuer import Queries

    pool = await _pool(db_url)
    sent: dict[int, float] = {}

    async def enqueue_one(i: int) -> None:
        async with pool.acquire() as conn:
            async with conn.transaction():
                await Queries.from_asyncpg_connection(conn).enqueue("lat", str(i).encode())
            sent[i] = time.time()  # the commit is acknowledged

    try:
        return sent, await _steady(enqueue_one, total)
    finally:
        await pool.close()


async def _produce(which: str, db_url: str, total: int) -> tuple[dict[int, float], float]:
    """Run the steady producer in a process of its own (so its work does not slow the measured worker)."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.queue", "produce", which, db_url,
                                                 str(total), stdout=asyncio.subprocess.PIPE,
                                                 env={**os.environ, "SHOUHU_LOG_LEVEL": "WARNING"})
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the {which} producer failed ({child.returncode})")
    answer = orjson.loads(out.strip().splitlines()[-1])
    return {int(k): v for k, v in answer["sent"].items()}, answer["rate"]


async def _run_producer(which: str, db_url: str, total: int) -> None:
    sent, rate = await (_ours_producer if which == "ours" else _peer_producer)(db_url, total)
    print(orjson.dumps({"sent": {str(k): v for k, v in sent.items()}, "rate": rate}).decode(), flush=True)


def _latencies_ms(started: dict[int, float], sent: dict[int, float], total: int) -> list[float]:
    """From the commit's acknowledgement to the handler starting; a handler may start before the producer
    hears the acknowledgement (the NOTIFY and the answer race): that counts as 0."""
    return [max(0.0, started[i] - sent[i]) * 1000 for i in range(WARMUP_JOBS, total)]


async def _pool(db_url: str) -> Any:
    import asyncpg

    from shared.db import plain_url

    # synchronous_commit off for the producers' own sessions: on this shared disk a WAL flush takes tens of
    # milliseconds, which would cap the producers below 500 commits/s; visibility and NOTIFY are unchanged.
    return await asyncpg.create_pool(plain_url(db_url), min_size=PRODUCER_CONNECTIONS, max_size=PRODUCER_CONNECTIONS,
                                     server_settings={"synchronous_commit": "off"})


# ---- shared phases -------------------------------------------------------------------------------


async def _steady(enqueue_one: Callable[[int], Awaitable[None]], total: int) -> float:
    """Enqueue `total` jobs at RATE_PER_S, one transaction each, on schedule; return the rate achieved.

    Each enqueue is started at its time on its own task (the producers' pools
    have PRODUCER_CONNECTIONS), so one slow commit does not hold back the next.
    """
    began = time.perf_counter()
    sends = []
    for i in range(total):
        delay = began + i / RATE_PER_S - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sends.append(asyncio.create_task(enqueue_one(i)))
    await asyncio.gather(*sends)
    return total / (time.perf_counter() - began)


async def _reclaim(db_url: str, which: str) -> float:
    """Kill -9 a worker holding HELD jobs; seconds until the last of them starts on a live worker."""
    starts: dict[str, float] = {}
    all_back = asyncio.Event()
    if which == "ours":
        engine = _engine(db_url)
        sessionmaker = make_sessionmaker(engine)
        async with sessionmaker() as session, session.begin():
            now = _now()
            await q.enqueue(session, [q.NewJob(queue=QUEUE, kind="hold", payload={"i": i}, run_at=now)
                                      for i in range(HELD)], now=now)
    else:
        from pgqueuer import Queries, QueueManager

        conn = await raw_connect(db_url)
        try:
            await Queries.from_asyncpg_connection(conn).enqueue(["hold"] * HELD,
                                                                [str(i).encode() for i in range(HELD)], [0] * HELD)
        finally:
            await conn.close()
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.queue", "hold", which, db_url,
                                                 stdout=asyncio.subprocess.PIPE,
                                                 env={**os.environ, "SHOUHU_LOG_LEVEL": "WARNING"})
    live: Any = None
    try:
        assert child.stdout is not None
        line = b""
        while line.strip() != b"held":  # its log lines come first
            line = await asyncio.wait_for(child.stdout.readline(), 60)
            if not line:
                raise RuntimeError(f"the {which} holder ended before taking its jobs")
        if which == "ours":
            async def rerun(job: q.ClaimedJob) -> None:
                starts.setdefault(str(job.payload["i"]), time.perf_counter())
                if len(starts) == HELD:
                    all_back.set()
            worker = Worker(sessionmaker, queue=QUEUE, handlers={"hold": Handler(rerun, transactional=False)},
                            clock=Clock(), database_url=db_url, batch_size=BATCH, concurrency=BATCH)
            live = (worker, asyncio.create_task(worker.run()))
        else:
            consumer = await raw_connect(db_url)
            qm = QueueManager(Queries.from_asyncpg_connection(consumer))

            @qm.entrypoint("hold")
            async def rerun_peer(job: Any) -> None:
                starts.setdefault(job.payload.decode(), time.perf_counter())
                if len(starts) == HELD:
                    all_back.set()
            live = (qm, asyncio.create_task(qm.run(batch_size=BATCH)), consumer)
        await asyncio.sleep(1.0)  # the live worker is up and idle
        os.kill(child.pid, signal.SIGKILL)
        killed = time.perf_counter()
        await child.wait()
        await asyncio.wait_for(all_back.wait(), 120)
        return max(starts.values()) - killed
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        if which == "ours":
            if live is not None:
                live[0].stop()
                await asyncio.gather(live[1], return_exceptions=True)
            await engine.dispose()
        elif live is not None:
            live[0].shutdown.set()
            await asyncio.gather(live[1], return_exceptions=True)
            await live[2].close()


async def _hold(which: str, db_url: str) -> None:
    """The subprocess of the reclaim phase: take HELD jobs, say so, and hang in them until killed."""
    taken = 0

    def took() -> None:
        nonlocal taken
        taken += 1
        if taken == HELD:
            print("held", flush=True)

    if which == "ours":
        engine = _engine(db_url)

        async def hang(job: q.ClaimedJob) -> None:
            took()
            await asyncio.Event().wait()

        # As the services run it: a 10 s lease kept alive by heartbeats while this process lives.
        worker = Worker(make_sessionmaker(engine), queue=QUEUE, handlers={"hold": Handler(hang, transactional=False)},
                        clock=Clock(), batch_size=HELD, concurrency=HELD, lease_s=10)
        await worker.run()
    else:
        from pgqueuer import Queries, QueueManager

        conn = await raw_connect(db_url)
        qm = QueueManager(Queries.from_asyncpg_connection(conn))

        @qm.entrypoint("hold")
        async def hang_peer(job: Any) -> None:
            took()
            await asyncio.Event().wait()

        await qm.run(batch_size=HELD)


# ---- the benchmark -------------------------------------------------------------------------------


async def bench_queue(quick: bool) -> dict[str, float]:
    """Drain rate, latency at 500 jobs/s and crash-to-rerun of our queue, with pgqueuer 1.6 as the baseline."""
    n = 3_000 if quick else 20_000
    latency_jobs = RATE_PER_S * (2 if quick else 5)
    report = _Report()
    report.notes.append(await machine_idle_note())
    figures: dict[str, float] = {}
    async with bench_database() as db_url:
        await _peer_install(db_url)
        ours_enq, ours_drain, tx_drain, peer_enq, peer_drain = [], [], [], [], []
        for _ in range(3):
            await _vacuum(db_url)
            enq, drain = await _ours_drain(db_url, n, transactional=False)
            ours_enq.append(enq)
            ours_drain.append(drain)
            await _vacuum(db_url)
            enq, drain = await _peer_drain(db_url, n)
            peer_enq.append(enq)
            peer_drain.append(drain)
            await _vacuum(db_url)
            tx_drain.append((await _ours_drain(db_url, n, transactional=True))[1])
        figures["queue_enqueue_per_s"] = report.add("ours: enqueue", ours_enq, "jobs/s")
        figures["queue_enqueue_peer_per_s"] = report.add("pgqueuer: enqueue", peer_enq, "jobs/s")
        figures["queue_drain_per_s"] = report.add(f"ours: drain {n}, external no-op", ours_drain, "jobs/s")
        figures["queue_drain_peer_per_s"] = report.add(f"pgqueuer: drain {n}", peer_drain, "jobs/s")
        ratios = [o / p for o, p in zip(ours_drain, peer_drain, strict=True)]
        report.add("drain ratio per round (ours/peer)", ratios, "x")
        figures["queue_drain_ratio"] = figures["queue_drain_per_s"] / figures["queue_drain_peer_per_s"]
        figures["queue_drain_tx_per_s"] = report.add(f"ours: drain {n}, transactional batch", tx_drain, "jobs/s")

        await _vacuum(db_url)
        ours_lat, ours_rate = await _ours_latency(db_url, latency_jobs)
        await _vacuum(db_url)
        peer_lat, peer_rate = await _peer_latency(db_url, latency_jobs)
        figures["queue_latency_p99_ms"] = _percentile(ours_lat, 99)
        figures["queue_latency_max_ms"] = max(ours_lat)
        figures["queue_latency_p50_ms"] = statistics.median(ours_lat)
        figures["queue_latency_peer_p99_ms"] = _percentile(peer_lat, 99)
        figures["queue_latency_peer_max_ms"] = max(peer_lat)
        figures["queue_latency_peer_p50_ms"] = statistics.median(peer_lat)
        figures["queue_latency_enqueue_per_s"] = ours_rate
        figures["queue_latency_peer_enqueue_per_s"] = peer_rate
        report.notes.append(
            f"latency at {RATE_PER_S} jobs/s ({latency_jobs} jobs, first {WARMUP_JOBS} not counted):"
            f" ours p50 {figures['queue_latency_p50_ms']:.1f} ms, p99 {figures['queue_latency_p99_ms']:.1f} ms,"
            f" max {figures['queue_latency_max_ms']:.1f} ms (enqueued at {ours_rate:.0f}/s);"
            f" pgqueuer p50 {figures['queue_latency_peer_p50_ms']:.1f} ms,"
            f" p99 {figures['queue_latency_peer_p99_ms']:.1f} ms, max {figures['queue_latency_peer_max_ms']:.1f} ms"
            f" (enqueued at {peer_rate:.0f}/s)")

        reclaims = []
        for _ in range(1 if quick else 3):
            await _vacuum(db_url)
            reclaims.append(await _reclaim(db_url, "ours"))
        figures["queue_reclaim_s"] = report.add("ours: kill -9 to rerun (10 s lease)", reclaims, "s")
        if not quick:
            await _vacuum(db_url)
            figures["queue_reclaim_peer_s"] = report.add("pgqueuer: kill -9 to rerun (30 s heartbeat timeout)",
                                                         [await _reclaim(db_url, "peer")], "s")
    report.notes.append(f"batch size {BATCH} for both; one worker each; server: the configured DATABASE_URL"
                        " (a throwaway database on it)")
    report.print()
    return {k: round(v, 3) for k, v in figures.items()}


if __name__ == "__main__":
    if sys.argv[1:2] == ["hold"]:
        asyncio.run(_hold(sys.argv[2], sys.argv[3]))
    elif sys.argv[1:2] == ["produce"]:
        asyncio.run(_run_producer(sys.argv[2], sys.argv[3], int(sys.argv[4])))
