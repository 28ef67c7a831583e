"""`shouhu bench calls`: how fast automated calls go out within Twilio's limit, and how fast seats claim work.

What is measured, in one run, against real processes: the Twilio sandbox
(``shouhu sandbox``), one dispatcher (``shouhu serve dispatcher``) and the
callcenter (``shouhu serve callcenter``), each a subprocess on its own free
port on 127.0.0.1, on a fresh, migrated database on the configured PostgreSQL
server (created and dropped as ``shouhu bench ingest`` does; the dispatcher
process, the raw HTTP client, the /proc CPU readings, the percentile and the
report table are ``bench/ingest.py``'s). Every service runs with
SHOUHU_LOG_LEVEL=WARNING and its default pool size; the callcenter without
TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN (so with the sandbox's account), with
TWILIO_API_BASE pointing at the sandbox and CALLCENTER_PUBLIC_URL at itself.

1. Automated calls. The sandbox is told to allow 10 new calls per second per
   account (POST /sandbox/twilio/limits) and to run phone time at 1/100
   (time_scale 0.01) so calls end fast; every number called answers after a
   short ring and presses "1". One callcenter process with its worker on and
   SHOUHU_CALLS_PER_S=10 (its own pacing; the pacer adds a fixed 50 ms margin
   to every interval, so it hands out at most 1 / (0.1 s + 0.05 s) = 6.67
   slots per second: see the note the run prints). N high-tier warnings
   (signal ``transfer_in_progress``; 300, 60 with --quick), each for a
   distinct phone, go to the dispatcher through POST /v1/warnings/batch, 50
   per request; the dispatcher queues one ``call.auto`` job per task (no chat
   is bound, so the high playbook starts with the call). The sandbox's
   GET /sandbox/twilio/stats is polled every 100 ms until ``created`` reaches
   N (bounded), then until every call is ``completed`` (bounded).

   - ``calls_per_s``: calls the sandbox created per second, from the first
     creation to the last, from the sandbox's own creation times
     ((N - 1) / (last - first), GET /sandbox/twilio/calls). Our own timing of
     the polled ``created`` counter is printed as a note.
   - ``calls_429``: the sandbox's ``rejected_429`` (requests it refused as over
     the limit; the callcenter retries those).
   - ``calls_placed_twice``: calls beyond the first to any task's phone
     (GET /sandbox/twilio/calls, counted per ``to``; each task has its own
     phone, so two calls to one phone are one attempt placed twice). Must be
     0. Phones that got no call at all are printed as a note.
   - ``calls_max_in_any_second``: the most calls the sandbox accepted within a
     sliding second (compare with the 10 allowed).

   How many of the N tasks the dispatcher then closed as acknowledged (the
   key "1" travelled back through the webhooks and the result jobs) is
   printed as an end-to-end check.

   Then, with the same processes (the callcenter's stop worker on), two phases at phone time 1:1
   (time_scale 1), so that ringing lasts as long as it would on a real phone:

   - ``ack_to_cancel_p50_ms`` / ``ack_to_cancel_p99_ms`` (issue #10 §4, target p99 < 1 s): K high-tier
     warnings (20, 100 without --quick) for numbers that ring and are never answered ("manual" in the
     sandbox). As soon as a task's robocall rings (polled every 20 ms), a supervisor key posts
     POST /v1/tasks/{id}/feedback {"outcome": "acknowledged"}; the clock starts just before the request is
     sent and stops when the sandbox receives the Twilio cancel (Status=canceled) for that call: the
     ``api_update`` event on the call's timeline, stamped by the sandbox on arrival (the same machine's wall
     clock as ours). In between: the dispatcher closes the task and queues StopCalls in one commit, its
     NOTIFY wakes the callcenter's stop worker, which claims the job, marks the call and asks Twilio.
     ``ack_to_cancel_baseline_p50_ms`` / ``_p99_ms``: the same cancel request alone, sent by this process
     with the real twilio client straight to the sandbox for K ringing calls it created itself: what one
     REST request costs here; the difference is the pipeline's. Every call must end canceled by the API,
     and no retry call may follow (``ack_calls_not_cancelled``, ``ack_retry_calls``: both must be 0).
   - ``transfer_wait_p50_s`` / ``transfer_wait_p95_s`` (issue #10 §3): T citizens (10, 40 without
     --quick) answer their robocall and press 2; 3T available seats of Hangzhou (unit 3301) have desk
     phones that answer after ringing 1 s (a person picking up) and hang up 2 s later, and two seats of
     Ningbo (3302) have phones that would answer too. The wait runs from the key press (the sandbox's
     ``press`` event) to the citizen being bridged to a seat (its ``bridged`` event), both on the sandbox's
     timeline. ``transfer_ring_baseline_p95_s``: from the winning seat leg's creation (the <Dial>
     starting) to its answer, i.e. the phone network and the person, which no code of ours can shorten;
     the difference is ours (the webhook, choosing and reserving seats, the spoken "please hold", which the
     sandbox plays instantly). ``transfers_other_unit_rung`` (calls to Ningbo's seats) must be 0; how many
     transfers found no free seat, and how many tasks the answering seat held afterwards, are printed.

2. Seat claims at province scale. The brief's 1,600 concurrent operators (580 PC seats and 1,000 desk
   phones): 1,600 operator keys, created directly in the database with ``create_key``, 16 in each of 100
   district units of Zhejiang (33CCDD: 10 cities x 10 districts). Before each of the two modes below the
   operator queue is topped up to M queued operator calls (100,000; 20,000 with --quick), spread evenly
   over the 100 districts: tiers 10% high / 30% medium / 60% low, deadlines from the default policy's
   playbooks (tasks created within the last half of their deadline), and 2% of the calls waiting for a
   later hour (callbacks: run_at 1-24 h ahead, which every claim must step over). They are loaded with
   SQL, not through the API (100,000 warnings through the dispatcher would take minutes and leave it
   busy running 100,000 plans during the measurement): one ``INSERT ... SELECT FROM generate_series``
   into a scratch table, then one INSERT each into ``cases``, ``tasks`` (open, one case each) and
   ``jobs`` (the contract's ``OperatorCall`` payload, attempt 100, the district as scope, the task's
   deadline as due_at, through the same columns ``shared.queue.service.enqueue`` writes), then
   ``VACUUM (ANALYZE)`` of the three tables, as autovacuum would have done in production.

   The callcenter runs as R replicas on the one database (R from ``SHOUHU_BENCH_REPLICAS``, default 2, as
   the ingest bench scales the dispatcher; docker-compose scales the callcenter the same way), each with
   SHOUHU_CALLCENTER_WORKER=false so no automated call interferes. These are fresh processes: the
   callcenter of (1) is stopped first. Client i talks to replica i % R. Every seat is first put available
   (PUT /v1/seat). Then two modes, one after the other:

   - back to back (60 s; 20 s with --quick): all 1,600 operators open one keep-alive connection each
     (not timed) and loop POST /v1/queue/next?held=release (a seat holds one task at a time: a task left
     in hand when the previous mode's window ended goes back to the queue as the next claim is made), then POST /v1/tasks/{id}/disposition {"disposition":
     "dissuaded"}, until the window ends (or a 204). This is the worst-case burst; by Little's law the
     answer time is ~(requests in flight) / (requests per second) whatever the query does, so this mode
     measures how many claims per second the machine can take.
   - with handling time (150 s): each of the 1,600 operators talks a random 20-60 s (uniform) between a
     claim and its disposition, and its first claim comes at a random moment within the first 40 s (the
     mean handling time), so claims arrive at ~1,600 / 40 s = 40/s from the start. Each claim goes out on
     a fresh connection (not timed), as a browser idle for tens of seconds would open one. With --quick:
     160 operators talking 2-6 s for 30 s: 1/10 of the seats and 1/10 of the handling time, the same
     ~40 claims/s.

   - ``claim_p50_ms`` / ``claim_p99_ms``: the worse of the two modes' ``claim_p50_ms_back_to_back`` /
     ``claim_p99_ms_back_to_back`` and ``claim_p50_ms_handling`` / ``claim_p99_ms_handling``: from just
     before a POST /v1/queue/next is sent to its 200 answer (nearest-rank percentiles over every
     successful claim; 204s are not claims).
   - ``claim_db_p50_ms_*`` / ``claim_db_p99_ms_*``: the claim statement alone, as the callcenter timed it
     around ``shared.queue.service.claim`` (sent back as ``Server-Timing: claim;dur=``). It includes the
     callcenter's own event-loop delay in resuming after the answer; absent for code that predates it.
   - ``claim_sql_p50_ms_*`` / ``claim_sql_p99_ms_*``: PostgreSQL's own execution time of the claim
     statement under the load: every 0.5 s this process runs the statement a seat of a random district
     would run (``shared.queue.service.claim_statement``, or main's statement before migration 0019)
     inside EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON), rolled back. The plan, its buffers and whether any
     plan had a Sort node are printed; every fourth probe is for a district where nothing waits
     (``claim_sql_empty_unit_p50_ms_*``).
   - ``claims_per_s`` (back to back) and ``claims_per_s_handling``: successful claims per second, from
     the start signal to the last claim's answer.
   - ``claims_doubled``: claims of a task that another seat still held (no 202 to its disposition, not
     returned by that seat's own next claim, its lease not yet over), or that was claimed again after its
     disposition was recorded (a second operator call of one task): over both modes. Must be 0. Two
     re-claims are correct and counted apart: ``claims_released``, a task its seat left undisposed (an
     operator who gave up after errors in the first mode) and returned to the queue by its next
     ``held=release`` claim, then claimed by another seat; ``claims_reclaimed``, a task claimed again
     once the first claim's lease (``claim_expires_at`` in the claim's answer) was over. The first few
     of each are printed with their seats and times.
   - ``claim_errors``: answers other than 200/204/202 (claims) and 202 (dispositions), and connections
     that failed; the first few are printed verbatim, with the servers' logged exceptions. An operator
     who gets an error answer tries again after 1 s, as a person would, and stops after 5 errors (or at
     once on a 4xx to a disposition, which retrying cannot change).

   ``SHOUHU_BENCH_CALLS_PHASES=claims`` runs the claim phase alone (for working on it; the other figures
   are then absent).

What bounds the claim figures (observed 2026-12-03 with 100,000 queued calls, 2 cores shared with other
engineers' test runs: load average 8-14, "machine busy before the run" 199%; PostgreSQL 15 on 127.0.0.1): not
the claim statement. Since migration 0019 a district seat's claim is one probe of ix_jobs_claim_district
(Index Scan, no Sort in any of ~400 probes, 24 buffers p50 / 39 max, 0.33-0.36 ms p50 and ~5 ms p99 under
the load; a district where nothing waits: 0.12 ms, 3 buffers). Main's LIKE filter over ix_jobs_scoped_ready
read 151-298 buffers p50 (max 2,005), 0.6-0.9 ms p50 and 4-15 ms p99, a Sort in a quarter of the plans, and
196 ms / 9,092 buffers for the district where nothing waits (the whole queue, on every "next" that answers
204). End to end, both codes gave 6-8 claims/s back to back and 12-13/s with handling time: each process of
the system got 10-14% of a core (its share of a saturated machine), ~20 ms of callcenter CPU per request
spread over a claim's ~7 round trips (auth, seat, transfers, claim, task, reasons, lease), so answers took
tens of seconds whatever the query did, and new pool connections timed out (5 s) under that starvation
(the 503 "database is unavailable" errors). Compare before and after in the same conditions, and read
claim_sql_* for the database's part.

Nothing is asserted: the issue's targets (at least 9.5 calls/s with no attempt
placed twice; claim p99 under 100 ms with no task claimed by two seats) are for
the reader to compare. A table (runs, median, min, max) and notes on where the
CPU went (this client, the sandbox, the dispatcher, each callcenter, PostgreSQL,
the whole machine) are printed; then the figures are returned
(``bench/__init__.py`` prints them as the last line with --json). All traffic goes
to 127.0.0.1; every loop is bounded in count and in time; every subprocess is
stopped and the database is dropped at the end, even on error.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from bench.ingest import (
    BenchError,
    ProcCpu,
    ServerProcess,
    _describe,
    _Dispatcher,
    _free_ports,
    _Http,
    _percentile,
    _Records,
    _replicas_from_env,
    _Report,
    _run_all,
    _verbatim,
    bench_audit_key,
    bench_database,
    machine_idle_note,
)
from shared.db import make_engine, make_sessionmaker, raw_connect, transaction

SANDBOX = "/sandbox/twilio"
SANDBOX_CALLS_PER_S = 10  # what the sandbox allows (Twilio's per-account CPS), and what the callcenter is told
TIME_SCALE = 0.01  # phone time runs 100x faster: a call ends within a fraction of a second
CALL_BATCH = 50  # warnings per request in (1)
CLAIM_BATCH = 1000  # warnings per request when filling the operator queue in (2)
STATS_POLL_S = 0.1
OPERATORS = 1600  # 580 PC seats + 1,000 desk phones (the brief), rounded as it does
SETUP_CLIENTS = 64  # seats put available at once before (2)
OPERATOR_MAX_ERRORS = 5  # error answers after which an operator stops (each retried after 1 s, as a person would)
# Units of the operator keys and the region codes of the tasks in their cities (the tasks spread evenly).
UNITS: dict[str, tuple[str, ...]] = {
    "3301": ("330102", "330106", "330108"),  # Hangzhou
    "3302": ("330203", "330205", "330212"),  # Ningbo
    "3201": ("320102", "320105", "320106"),  # Nanjing
}
# The claim phase's operators: 16 seats in each of 100 district units of Zhejiang (10 cities x 10 districts).
CLAIM_DISTRICTS = tuple(f"33{city:02d}{district:02d}" for city in range(1, 11) for district in range(2, 12))
CLAIM_FRAUD_TYPES = ("fake_investment", "task_brushing", "impersonating_police", "fake_customer_service", "other")
EMPTY_DISTRICT = "331102"  # a district of the same province with no seat and nothing queued (probed)
CALLBACK_SHARE = 0.02  # queued operator calls waiting for a later hour (callbacks): every claim must step over them
# Callcenter settings that would change what is measured if inherited from the caller's environment.
CALLCENTER_ENV_DROPPED = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "SHOUHU_SANDBOX_URL",
                          "SHOUHU_CALLCENTER_WORKER_CONCURRENCY", "SHOUHU_WORKER_POLL_INTERVAL_S",
                          "SHOUHU_DAILY_CALL_CAP", "SHOUHU_POLICY")


@dataclass(frozen=True)
class _Plan:
    calls: int
    calls_max_s: float  # for the sandbox to create every call
    acks: int  # robocalls cancelled by an acknowledgement (and as many baseline cancels)
    transfers: int  # citizens pressing 2
    tasks: int  # operator calls queued at the start of each claim mode
    back_to_back_s: float  # how long the operators claim back to back
    handling_s: float  # how long they claim with handling time between claims
    handling_seats: int  # operators in that mode
    talk_s: tuple[float, float]  # each call's handling time, uniform in this range

    @classmethod
    def of(cls, quick: bool) -> _Plan:
        if quick:
            # 1/10 of the operators with 1/10 of the handling time: the same 40 claims/s arrive.
            return cls(calls=60, calls_max_s=60, acks=20, transfers=10, tasks=20_000, back_to_back_s=20,
                       handling_s=30, handling_seats=OPERATORS // 10, talk_s=(2.0, 6.0))
        return cls(calls=300, calls_max_s=150, acks=100, transfers=40, tasks=100_000, back_to_back_s=60,
                   handling_s=150, handling_seats=OPERATORS, talk_s=(20.0, 60.0))


SEAT_RING_S = 1.0  # a seat's phone rings this long before the officer picks up (transfer phase)
SEAT_TALK_S = 2.0  # and the officer talks this long
TRANSFER_SEATS_PER_CITIZEN = 3  # seats with phones in the unit, per citizen pressing 2 (5 ring at once, each keeps one)
ACK_POLL_S = 0.02


class CallsBenchError(BenchError):
    """Something the figures depend on did not happen (a server error, a wrong tier): they would be wrong."""


# ---- processes ------------------------------------------------------------------------------------------------


async def _start(stack: AsyncExitStack, services: list[Any]) -> None:
    """Spawn all, then wait for all (start-up overlaps); each is stopped when `stack` closes, even on error."""
    for service in services:
        stack.push_async_exit(service.__aexit__)
        service.spawn()
    await _run_all([s.wait_ready(60.0) for s in services])


def _callcenter(name: str, db_url: str, port: int, sandbox_port: int, *, worker: bool) -> ServerProcess:
    env = {k: v for k, v in os.environ.items() if k not in CALLCENTER_ENV_DROPPED}
    env |= {"DATABASE_URL": db_url, "TWILIO_API_BASE": f"http://127.0.0.1:{sandbox_port}",
            "CALLCENTER_PUBLIC_URL": f"http://127.0.0.1:{port}", "SHOUHU_CALLS_PER_S": str(SANDBOX_CALLS_PER_S),
            "SHOUHU_LOG_LEVEL": "WARNING", "SHOUHU_CALLCENTER_WORKER": "true" if worker else "false",
            # No wrap-up after a disposition (where the callcenter has it): the claim phase's handling time
            # stands for the whole call, and a back-to-back seat claims again at once.
            "SHOUHU_SEAT_WRAP_UP_S": "0"}
    return ServerProcess(name, ["serve", "callcenter"], port, env, "/readyz")


# ---- requests -------------------------------------------------------------------------------------------------


async def _json(http: _Http, method: str, path: str, body: Any = None, *, timeout_s: float = 30) -> Any:
    raw = orjson.dumps(body) if body is not None else b""
    status, data = await asyncio.wait_for(http.request(method, path, raw), timeout_s)
    if status >= 300:
        raise CallsBenchError(f"{method} {path} answered {_verbatim(status, data)}")
    return orjson.loads(data)


async def _ingest(port: int, key: str, bodies: list[bytes], *, concurrency: int, max_s: float) -> list[dict[str, Any]]:
    """POST every body to /v1/warnings/batch; every record must be accepted. Returns the results, in order."""
    answers: list[list[dict[str, Any]]] = [[] for _ in bodies]
    todo = list(reversed(range(len(bodies))))
    deadline = time.monotonic() + max_s

    async def worker() -> None:
        http = _Http(port, key)
        try:
            while todo:
                if time.monotonic() > deadline:
                    raise CallsBenchError(f"ingesting {len(bodies)} batches took over {max_s:.0f} s")
                i = todo.pop()
                status, data = await asyncio.wait_for(http.request("POST", "/v1/warnings/batch", bodies[i]), 60)
                if status != 200:
                    raise CallsBenchError(f"POST /v1/warnings/batch answered {_verbatim(status, data)}")
                answer = orjson.loads(data)
                if answer["rejected"] or answer["duplicates"]:
                    bad = [r for r in answer["results"] if r["status"] != "accepted"][:3]
                    raise CallsBenchError(f"batch: {answer['rejected']} rejected, {answer['duplicates']} duplicates;"
                                          f" first: {orjson.dumps(bad).decode()}")
                answers[i] = answer["results"]
        finally:
            http.close()

    await _run_all([worker() for _ in range(max(1, min(concurrency, len(bodies))))])
    return [r for chunk in answers for r in chunk]


def _number_path(e164: str) -> str:
    return f"{SANDBOX}/numbers/{e164.replace('+', '%2B')}"


# ---- 1. automated calls ---------------------------------------------------------------------------------------


@dataclass
class _Calls:
    rate: float  # from the sandbox's creation times
    polled_rate: float | None  # from our own timing of the polled counter
    stats: dict[str, Any]
    created: int
    placed_twice: int
    missing: int
    cpu: str
    notes: list[str] = field(default_factory=list)


async def _calls_phase(sandbox_port: int, dispatcher_port: int, key: str, db_url: str, gen: _Records, plan: _Plan,
                       procs: dict[str, int]) -> _Calls:
    n = plan.calls
    notes: list[str] = []
    control = _Http(sandbox_port)
    try:
        await _json(control, "POST", f"{SANDBOX}/settings", {"time_scale": TIME_SCALE})
        await _json(control, "POST", f"{SANDBOX}/limits", {"calls_per_s": SANDBOX_CALLS_PER_S})
        regions = [r for codes in UNITS.values() for r in codes]
        rows = [gen.one("high") for _ in range(n)]
        wires = [r.wire | {"signal": "transfer_in_progress", "region_code": regions[i % len(regions)]}
                 for i, r in enumerate(rows)]
        phones = [r.e164 for r in rows]
        if len(set(phones)) != n:
            raise CallsBenchError("two warnings of the call phase share a phone")

        # Every number answers after a short ring and presses 1 (acknowledged).
        todo = list(phones)

        async def script() -> None:
            http = _Http(sandbox_port)
            try:
                while todo:
                    await _json(http, "PUT", _number_path(todo.pop()),
                                {"behaviour": "answer", "digits": ["1"], "ring_s": 0.5})
            finally:
                http.close()

        await asyncio.wait_for(_run_all([script() for _ in range(4)]), 60)
        before = await _json(control, "GET", f"{SANDBOX}/stats")
        if before["created"] or before["rejected_429"]:
            raise CallsBenchError(f"the sandbox had calls before the call phase: {before}")

        bodies = [orjson.dumps({"warnings": wires[i:i + CALL_BATCH]}) for i in range(0, n, CALL_BATCH)]
        polls: list[tuple[float, int]] = []
        with ProcCpu(procs) as cpu:
            t0 = time.perf_counter()
            results = await _ingest(dispatcher_port, key, bodies, concurrency=1, max_s=60)
            posted_s = time.perf_counter() - t0
            deadline = t0 + plan.calls_max_s
            for _ in range(int(plan.calls_max_s / STATS_POLL_S) + 10):
                stats = await _json(control, "GET", f"{SANDBOX}/stats")
                polls.append((time.perf_counter(), int(stats["created"])))
                if stats["created"] >= n or time.perf_counter() > deadline:
                    break
                await asyncio.sleep(STATS_POLL_S)
        not_high = [r for r in results if r["tier"] != "high"]
        if not_high:
            raise CallsBenchError(f"{len(not_high)} call-phase warnings were not high tier; first: {not_high[0]}")
        task_ids = [r["task_id"] for r in results]
        if len(set(task_ids)) != n:
            raise CallsBenchError(f"{n} call-phase warnings made {len(set(task_ids))} tasks (some merged)")
        notes.append(f"call phase: {n} warnings posted in {len(bodies)} requests in {posted_s:.2f} s")
        if polls[-1][1] < n:
            notes.append(f"call phase: only {polls[-1][1]} of {n} calls created within {plan.calls_max_s:.0f} s")

        # Let every call finish (bounded), then read them all from the sandbox.
        for _ in range(600):
            stats = await _json(control, "GET", f"{SANDBOX}/stats")
            if stats["completed"] + stats["busy"] + stats["no_answer"] + stats["failed"] + stats["canceled"] \
                    >= stats["created"] and not stats["live"]:
                break
            await asyncio.sleep(0.1)
        calls = (await _json(control, "GET", f"{SANDBOX}/calls?limit=2000"))["calls"]
    finally:
        control.close()

    outbound = [c for c in calls if c["direction"] == "outbound-api"]
    per_phone: dict[str, int] = {}
    for c in outbound:
        per_phone[c["to"]] = per_phone.get(c["to"], 0) + 1
    placed_twice = sum(count - 1 for count in per_phone.values() if count > 1)
    missing = sum(1 for p in phones if p not in per_phone)
    strangers = sum(count for p, count in per_phone.items() if p not in set(phones))
    created_at = sorted(c["created_at"] for c in outbound)
    rate = (len(created_at) - 1) / (created_at[-1] - created_at[0]) if len(created_at) > 1 else 0.0
    first = next((t for t, c in polls if c >= 1), None)
    last = next((t for t, c in polls if c >= n), None)
    polled = (n - 1) / (last - first) if first is not None and last is not None and last > first else None
    if missing:
        notes.append(f"call phase: {missing} task phone(s) got no call")
    if strangers:
        notes.append(f"call phase: {strangers} call(s) to numbers that were not any task's phone")
    statuses: dict[str, int] = {}
    for c in outbound:
        statuses[c["status"]] = statuses.get(c["status"], 0) + 1
    notes.append(f"call phase: sandbox calls by status {statuses}; sandbox stats: created {stats['created']},"
                 f" rejected_429 {stats['rejected_429']}, max_calls_in_any_second {stats['max_calls_in_any_second']},"
                 f" status callbacks sent {stats['status_callbacks_sent']} / failed"
                 f" {stats['status_callbacks_failed']}, application errors {stats['application_errors']}")

    # End to end: the key "1" went back through the webhooks and the dispatcher closed the task (bounded wait).
    conn = await raw_connect(db_url)
    try:
        ids = [uuid.UUID(t) for t in task_ids]
        acknowledged = 0
        for _ in range(60):
            acknowledged = await conn.fetchval(
                "SELECT count(*) FROM tasks WHERE id = ANY($1::uuid[]) AND status = 'closed'"
                " AND outcome = 'acknowledged'", ids)
            if acknowledged >= n:
                break
            await asyncio.sleep(0.5)
        attempts = await conn.fetch(
            "SELECT status, count(*) AS n FROM call_attempts WHERE task_id = ANY($1::uuid[]) GROUP BY status", ids)
    finally:
        await conn.close()
    notes.append(f"call phase: {acknowledged} of {n} tasks closed as acknowledged (key 1) end to end;"
                 f" call_attempts rows by status {dict((r['status'], r['n']) for r in attempts)}")
    return _Calls(rate, polled, stats, len(outbound), placed_twice, missing, cpu.result, notes)


# ---- 1b. an acknowledgement cancels a ringing robocall ------------------------------------------------------


@dataclass
class _Acks:
    latencies_ms: list[float]
    baseline_ms: list[float]
    not_cancelled: int
    retry_calls: int
    notes: list[str] = field(default_factory=list)


def _first(call: dict[str, Any], kind: str, **match: Any) -> float | None:
    """The sandbox's time (unix seconds) of the first event of this kind on a call's timeline."""
    return next((e["at"] for e in call["events"]
                 if e["type"] == kind and all(e.get(k) == v for k, v in match.items())), None)


async def _wait_final(control: _Http, phones: set[str], *, max_s: float) -> list[dict[str, Any]]:
    """Every call to these numbers, once none is live any more (bounded)."""
    deadline = time.monotonic() + max_s
    while True:
        calls = [c for c in (await _json(control, "GET", f"{SANDBOX}/calls?limit=2000"))["calls"] if c["to"] in phones]
        if calls and all(c["status"] in ("completed", "busy", "no-answer", "failed", "canceled") and c["done"]
                         for c in calls) or time.monotonic() > deadline:
            return calls
        await asyncio.sleep(0.1)


async def _baseline_cancels(sandbox_port: int, control: _Http, n: int) -> list[float]:
    """n calls this process creates and cancels itself with the twilio client: the REST request's own cost."""
    from twilio.http.async_http_client import AsyncTwilioHttpClient
    from twilio.rest import Client

    from services.callcenter.settings import CallcenterSettings

    phones = [f"+86177{i:08d}" for i in range(n)]
    for p in phones:
        await _json(control, "PUT", _number_path(p), {"behaviour": "manual"})
    client = Client(CallcenterSettings.SANDBOX_ACCOUNT_SID, CallcenterSettings.SANDBOX_AUTH_TOKEN,
                    http_client=AsyncTwilioHttpClient())
    client.api.base_url = f"http://127.0.0.1:{sandbox_port}"
    sent: dict[str, float] = {}
    try:
        for p in phones:
            call = await client.calls.create_async(to=p, from_=CallcenterSettings.SANDBOX_FROM_NUMBER,
                                                   url="http://127.0.0.1:9/never-fetched", timeout=30)
            await _json(control, "GET", f"{SANDBOX}/calls/{call.sid}?status=ringing&wait=5")
            sent[call.sid] = time.time()
            await client.calls(call.sid).update_async(status="canceled")
            await asyncio.sleep(1.0 / (SANDBOX_CALLS_PER_S - 2))  # within the sandbox's calls per second
    finally:
        await client.http_client.close()
    calls = {c["sid"]: c for c in await _wait_final(control, set(phones), max_s=30)}
    return [(at - t0) * 1000 for sid, t0 in sent.items()
            if sid in calls and (at := _first(calls[sid], "api_update")) is not None]


async def _ack_phase(sandbox_port: int, dispatcher_port: int, ingest_key: str, supervisor_key: str, gen: _Records,
                     plan: _Plan) -> _Acks:
    n = plan.acks
    notes: list[str] = []
    control = _Http(sandbox_port)
    api = _Http(dispatcher_port, supervisor_key)
    try:
        await _json(control, "POST", f"{SANDBOX}/settings", {"time_scale": 1.0})
        baseline = await _baseline_cancels(sandbox_port, control, n)

        rows = [gen.one("high") for _ in range(n)]
        wires = [r.wire | {"signal": "transfer_in_progress", "region_code": "330106"} for r in rows]
        phones = [r.e164 for r in rows]
        for p in phones:
            await _json(control, "PUT", _number_path(p), {"behaviour": "manual"})  # rings until cancelled
        since = time.time()
        results = await _ingest(dispatcher_port, ingest_key, [orjson.dumps({"warnings": wires})], concurrency=1,
                                max_s=60)
        task_of = {p: r["task_id"] for p, r in zip(phones, results, strict=True)}
        acked: dict[str, float] = {}  # call sid -> when the acknowledgement was sent
        answered_ms: list[float] = []  # how long the dispatcher took to answer the feedback (its commit included)
        pending: list[asyncio.Task[None]] = []
        errors: list[str] = []

        async def acknowledge(sid: str, task_id: str) -> None:
            http = _Http(dispatcher_port, supervisor_key)
            try:
                acked[sid] = time.time()
                status, data = await asyncio.wait_for(http.request(
                    "POST", f"/v1/tasks/{task_id}/feedback", orjson.dumps({"outcome": "acknowledged"})), 30)
                answered_ms.append((time.time() - acked[sid]) * 1000)
                if status != 200:
                    errors.append(f"POST /v1/tasks/{task_id}/feedback: {_verbatim(status, data)}")
            finally:
                http.close()

        deadline = time.monotonic() + plan.calls_max_s
        while len(acked) < n and time.monotonic() < deadline:
            ringing = (await _json(control, "GET", f"{SANDBOX}/calls?status=ringing&since={since}"))["calls"]
            for call in ringing:
                if call["to"] in task_of and call["sid"] not in acked:
                    pending.append(asyncio.create_task(acknowledge(call["sid"], task_of[call["to"]])))
                    acked[call["sid"]] = time.time()  # reserved; the task sets the exact time just before sending
            await asyncio.sleep(ACK_POLL_S)
        await asyncio.gather(*pending)
        if errors:
            raise CallsBenchError(f"acknowledgements failed; first: {errors[0]}")
        if len(acked) < n:
            notes.append(f"ack phase: only {len(acked)} of {n} robocalls rang within {plan.calls_max_s:.0f} s")
        await asyncio.sleep(2.0)  # a retry call, if one were queued, would have time to start
        calls = await _wait_final(control, set(phones), max_s=40)
    finally:
        control.close()
        api.close()
    by_sid = {c["sid"]: c for c in calls}
    latencies = [(at - t0) * 1000 for sid, t0 in acked.items()
                 if (at := _first(by_sid.get(sid, {"events": []}), "api_update")) is not None]
    not_cancelled = sum(1 for sid in acked if by_sid.get(sid, {}).get("status") != "canceled")
    per_phone: dict[str, int] = {}
    for c in calls:
        per_phone[c["to"]] = per_phone.get(c["to"], 0) + 1
    retries = sum(count - 1 for count in per_phone.values() if count > 1)
    statuses: dict[str, int] = {}
    for c in calls:
        statuses[c["status"]] = statuses.get(c["status"], 0) + 1
    notes.append(f"ack phase: {len(acked)} robocalls acknowledged while ringing; sandbox calls by status {statuses};"
                 f" {len(latencies)} cancel requests timed; baseline: {len(baseline)} cancels sent straight to the"
                 " sandbox by this process; the dispatcher answered the feedback (its commit, which queues the"
                 f" stop, included) in p50 {_percentile(answered_ms or [0], 50):.0f} ms,"
                 f" p99 {_percentile(answered_ms or [0], 99):.0f} ms")
    return _Acks(latencies, baseline, not_cancelled, retries, notes)


# ---- 1c. key 2: a live officer ----------------------------------------------------------------------------------


@dataclass
class _Transfers:
    waits_s: list[float]
    ring_baseline_s: list[float]
    other_unit_rung: int
    notes: list[str] = field(default_factory=list)


async def _transfer_phase(sandbox_port: int, dispatcher_port: int, cc_port: int, ingest_key: str, db_url: str,
                          gen: _Records, plan: _Plan, local_seats: list[tuple[str, str]],
                          other_seats: list[tuple[str, str]]) -> _Transfers:
    n = plan.transfers
    notes: list[str] = []
    control = _Http(sandbox_port)
    try:
        await _json(control, "POST", f"{SANDBOX}/settings", {"time_scale": 1.0})
        desks: dict[str, str] = {}
        for i, (key_id, key) in enumerate(local_seats + other_seats):
            desk = f"+86571880{i:05d}" if i < len(local_seats) else f"+86574880{i:05d}"
            await _json(control, "PUT", _number_path(desk),
                        {"behaviour": "answer", "ring_s": SEAT_RING_S, "hangup_after_s": SEAT_TALK_S})
            http = _Http(cc_port, key)
            try:
                seat = await _json(http, "PUT", "/v1/seat", {"state": "available", "phone": desk})
            finally:
                http.close()
            if seat["state"] != "available":
                raise CallsBenchError(f"PUT /v1/seat answered {seat}")
            desks[desk] = key_id
        other_desks = {d for d, k in desks.items() if k in {k2 for k2, _ in other_seats}}

        rows = [gen.one("high") for _ in range(n)]
        wires = [r.wire | {"signal": "transfer_in_progress", "region_code": "330106"} for r in rows]
        phones = [r.e164 for r in rows]
        for p in phones:
            await _json(control, "PUT", _number_path(p), {"behaviour": "answer", "digits": ["2"], "ring_s": 0.5})
        results = await _ingest(dispatcher_port, ingest_key, [orjson.dumps({"warnings": wires})], concurrency=1,
                                max_s=60)
        deadline = time.monotonic() + plan.calls_max_s + 90
        while time.monotonic() < deadline:
            calls = [c for c in (await _json(control, "GET", f"{SANDBOX}/calls?limit=2000"))["calls"]
                     if c["to"] in set(phones)]
            if len(calls) >= n and all(c["status"] in ("completed", "busy", "no-answer", "failed", "canceled")
                                       and c["done"] for c in calls):
                break
            await asyncio.sleep(0.2)
        everything = {c["sid"]: c for c in (await _json(control, "GET", f"{SANDBOX}/calls?limit=2000"))["calls"]}
    finally:
        control.close()
    waits, rings, no_dial = [], [], 0
    for call in (c for c in everything.values() if c["to"] in set(phones)):
        pressed = _first(call, "press")
        bridged = next((e for e in call["events"] if e["type"] == "bridged"), None)
        if not any(e["type"] == "dial" for e in call["events"]):
            no_dial += 1
        if pressed is None or bridged is None:
            continue
        waits.append(bridged["at"] - pressed)
        leg = everything.get(bridged["to"])
        if leg is not None and (created := _first(leg, "status", status="queued")) is not None \
                and (answered := _first(leg, "answered")) is not None:
            rings.append(answered - created)
    other_rung = sum(1 for c in everything.values() if c["to"] in other_desks)
    conn = await raw_connect(db_url)
    try:
        ids = [uuid.UUID(r["task_id"]) for r in results]
        outcomes = await conn.fetch("SELECT outcome, count(*) AS n FROM call_transfers WHERE task_id = ANY($1::uuid[])"
                                    " GROUP BY outcome", ids)
        held = await conn.fetchval(
            "SELECT count(*) FROM call_transfers t JOIN jobs j ON j.id = t.claimed_job_id"
            " WHERE t.task_id = ANY($1::uuid[]) AND j.status = 'running' AND j.locked_by = 'seat:' || t.answered_by",
            ids)
    finally:
        await conn.close()
    notes.append(f"transfer phase: {n} citizens pressed 2, {len(waits)} bridged to a seat, {no_dial} heard the"
                 f" call-back message without ringing (no free seat); transfers by outcome"
                 f" {dict((r['outcome'], r['n']) for r in outcomes)}; {held} tasks held by the seat that answered;"
                 f" {len(local_seats)} Hangzhou seats answering after {SEAT_RING_S:.0f} s")
    return _Transfers(waits, rings, other_rung, notes)


# ---- 2. seat claims -------------------------------------------------------------------------------------------


@dataclass
class _Probe:
    """The claim statement as the database runs it under the load: EXPLAIN (ANALYZE, BUFFERS) every 0.5 s."""

    execution_ms: list[float] = field(default_factory=list)
    buffers: list[int] = field(default_factory=list)
    # A seat of a district with nothing queued (its "next" answers 204): the LIKE filter walked the whole queue.
    empty_ms: list[float] = field(default_factory=list)
    empty_buffers: list[int] = field(default_factory=list)
    sorts: int = 0
    nodes: list[str] = field(default_factory=list)


@dataclass
class _Claim:
    """A claim as the operators saw it: which seat, when its answer came, its lease's end, whether it was disposed."""

    seat: str
    answered_at: float  # time.perf_counter() when the claim's 200 arrived
    expires_at: datetime  # claim_expires_at in the answer (the server's clock, UTC)
    mode: str
    disposed: bool = False  # its disposition answered 202 (the job is finished; the task closes)


@dataclass
class _Claims:
    """Every claim seen, over both modes, to tell a double from a correct re-claim (see ``claims_doubled``)."""

    latest: dict[str, _Claim] = field(default_factory=dict)  # task -> its latest claim
    asked_at: dict[str, float] = field(default_factory=dict)  # seat -> when it last sent POST /v1/queue/next

    def classify(self, task_id: str, seat: str, *, mode: str, answered_at: float, now: datetime) -> tuple[str, str]:
        """("first" | "released" | "reclaimed" | "doubled", what happened) for a claim of `task_id` by `seat`.

        Released: the seat that held the task sent a claim (held=release returns what it holds, in the claim's
        transaction) after its claim of this task was answered and before this answer came. Reclaimed: the first
        claim's lease was over when this answer came. Anything else is two seats on one task: the first still
        held it, or it was claimed again after its disposition was recorded (a second job of the task).
        """
        before = self.latest.get(task_id)
        if before is None:
            return "first", ""
        what = (f"task {task_id} claimed by seat {seat} ({mode}) {answered_at - before.answered_at:.1f} s after"
                f" seat {before.seat} ({before.mode})")
        if before.disposed:
            return "doubled", f"{what}, whose disposition had been recorded (202)"
        if self.asked_at.get(before.seat, float("-inf")) > before.answered_at:
            return "released", f"{what}, which left it undisposed and asked for its next task with held=release"
        if now >= before.expires_at:
            return "reclaimed", f"{what}, whose lease ended at {before.expires_at.isoformat()}"
        return "doubled", f"{what}, which still held it (lease until {before.expires_at.isoformat()})"


@dataclass
class _Mode:
    """One way of claiming (back to back, or with handling time between claims) and what it measured."""

    name: str
    seats: int
    latencies: list[float] = field(default_factory=list)  # ms, POST /v1/queue/next -> 200
    db_ms: list[float] = field(default_factory=list)  # the claim statement, from the answer's Server-Timing
    disposition_ms: list[float] = field(default_factory=list)
    claims_per_s: float = 0.0
    dispositions_per_s: float = 0.0
    errors: int = 0
    doubled: int = 0  # claims of a task another seat held at the time, or claimed again after its disposition
    released: int = 0  # claims of a task its seat left undisposed and returned with its next held=release claim
    reclaimed: int = 0  # claims of a task left undisposed, once its first claim's lease was over (correct)
    left_in_hand: int = 0  # operators who stopped holding a task with no 202 to its disposition
    queued_at_start: int = 0
    probe: _Probe = field(default_factory=_Probe)
    cpu: str = ""
    notes: list[str] = field(default_factory=list)


# $1 how many, $2 first phone number, $3 district units, $4 now, $5-$7 deadlines (min) of high/medium/low,
# $8-$10 their job priorities, $11 share of calls waiting for a later hour, $12 fraud types.
# Tasks are open, created within the last half of their deadline; one case each (phones +86147..., a prefix the
# warnings of phase 1 never use: an open case's phone is unique); one operator call each,
# written through the same columns as shared.queue.service.enqueue (the generated unit columns follow).
_CLAIM_GEN = """
CREATE TEMP TABLE claim_gen AS
WITH base AS (
  SELECT i, gen_random_uuid() AS task_id, gen_random_uuid() AS case_id, random() AS r_tier, random() AS r_age,
    random() AS r_wait, random() AS r_fraud, ($3::text[])[1 + i % array_length($3::text[], 1)] AS region_code
  FROM generate_series(0, $1::int - 1) AS i
), tiered AS (
  SELECT b.*, CASE WHEN r_tier < 0.10 THEN 'high' WHEN r_tier < 0.40 THEN 'medium' ELSE 'low' END AS tier FROM base b
), timed AS (
  SELECT t.*, CASE tier WHEN 'high' THEN $5::float8 WHEN 'medium' THEN $6::float8 ELSE $7::float8 END
    * interval '1 minute' AS deadline,
    CASE tier WHEN 'high' THEN $8::int WHEN 'medium' THEN $9::int ELSE $10::int END AS priority
  FROM tiered t
)
SELECT i, task_id, case_id, region_code, tier, priority, '+86147' || lpad(($2::bigint + i)::text, 8, '0') AS phone,
  ($12::text[])[1 + floor(r_fraud * array_length($12::text[], 1))::int] AS fraud_type,
  $4::timestamptz - deadline * r_age * 0.5 AS created_at,
  $4::timestamptz - deadline * r_age * 0.5 + deadline AS due_at,
  CASE WHEN r_wait < $11::float8 THEN $4::timestamptz + (1 + r_wait / $11::float8 * 23) * interval '1 hour'
       ELSE $4::timestamptz END AS run_at
FROM timed
"""
_CLAIM_CASES = (
    "INSERT INTO cases (id, phone, status, tier, region_code, warning_count, first_warning_at, last_warning_at,"
    " created_at) SELECT case_id, phone, 'open', tier, region_code, 1, created_at, created_at, created_at"
    " FROM claim_gen ORDER BY i")
_CLAIM_TASKS = (
    "INSERT INTO tasks (id, case_id, phone, region_code, fraud_type, tier, status, policy_version, created_at,"
    " plan_started_at, due_at) SELECT task_id, case_id, phone, region_code, fraud_type, tier, 'open', $1, created_at,"
    " created_at, due_at FROM claim_gen ORDER BY i")
_CLAIM_JOBS = (
    "INSERT INTO jobs (queue, kind, payload, run_at, priority, dedupe_key, task_id, max_attempts, scope, due_at)"
    " SELECT 'callcenter', 'call.operator', jsonb_build_object('task_id', task_id, 'case_id', case_id, 'channel',"
    " 'operator_call', 'attempt', 100, 'tier', tier, 'phone', phone, 'region_code', region_code, 'fraud_type',"
    " fraud_type, 'due_at', due_at, 'emergency', false, 'reason', 'benchmark'), run_at, priority,"
    " 'operator_call:' || task_id || ':100', task_id, 10, region_code, due_at FROM claim_gen ORDER BY i")


# Two live operator calls of one task could be claimed by two seats: the loader writes one per task (its own new
# task id each), and this counts, after each fill and at the end, that nothing else queued a second.
_TASKS_WITH_TWO_OPERATOR_CALLS = (
    "SELECT count(*) FROM (SELECT task_id FROM jobs WHERE kind = 'call.operator' AND status IN ('queued', 'running')"
    " GROUP BY task_id HAVING count(*) > 1) AS shared")


async def _fill_operator_queue(db_url: str, *, want: int, first_phone: int) -> tuple[int, int, float]:
    """Top the operator queue up to `want` queued calls with SQL (tasks, cases, jobs); returns (added, queued, s)."""
    from services.dispatcher.policy.service import PolicyStore, load_policy
    from services.dispatcher.settings import DispatcherSettings
    from shared.contracts import PRIORITY

    policy = load_policy(DispatcherSettings().policy_path)
    playbooks = [policy.playbook(t) for t in ("high", "medium", "low")]
    engine = make_engine(db_url, pool_size=1, application_name="shouhu-bench", audit_key=bench_audit_key())
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await PolicyStore(policy).register_current(session)  # the tasks' foreign key (once)
    finally:
        await engine.dispose()
    conn = await raw_connect(db_url)
    try:
        t0 = time.perf_counter()
        queued = await conn.fetchval("SELECT count(*) FROM jobs WHERE kind = 'call.operator' AND status = 'queued'")
        add = max(want - queued, 0)
        if add:
            async with conn.transaction():
                await conn.execute(_CLAIM_GEN, add, first_phone, list(CLAIM_DISTRICTS), datetime.now(UTC),
                                   *[float(p.deadline_minutes) for p in playbooks],
                                   *[PRIORITY[t] for t in ("high", "medium", "low")], CALLBACK_SHARE,
                                   list(CLAIM_FRAUD_TYPES))
                await conn.execute(_CLAIM_CASES)
                await conn.execute(_CLAIM_TASKS, policy.version)
                await conn.execute(_CLAIM_JOBS)
                await conn.execute("DROP TABLE claim_gen")
            # A table that has lived in production has statistics and a visibility map; a bulk load has neither.
            for table in ("jobs", "tasks", "cases"):
                await conn.execute(f"VACUUM (ANALYZE) {table}")
        queued = await conn.fetchval("SELECT count(*) FROM jobs WHERE kind = 'call.operator' AND status = 'queued'")
        if shared := await conn.fetchval(_TASKS_WITH_TWO_OPERATOR_CALLS):
            raise CallsBenchError(f"{shared} tasks have more than one queued or running operator call after the fill")
        return add, queued, time.perf_counter() - t0
    finally:
        await conn.close()


def _server_timing_ms(head: bytes) -> float | None:
    """The claim statement's time from the answer's `Server-Timing: claim;dur=<ms>` header (None without it)."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"server-timing":
            for metric in value.split(b","):
                parts = [p.strip() for p in metric.split(b";")]
                if parts[0] == b"claim":
                    for p in parts[1:]:
                        if p.startswith(b"dur="):
                            return float(p[4:])
    return None


# The claim statement before migration 0019 (main at 2f0ed21), for probing a checkout that predates
# shared.queue.service.claim_statement: the same WHERE and ORDER BY, the unit as a LIKE prefix.
_CLAIM_BEFORE_0019 = (
    "WITH picked AS (SELECT id FROM jobs WHERE status = 'queued' AND queue = :queue AND run_at <= :now"
    " AND kind = ANY(CAST(:kinds AS text[])) AND scope LIKE :scope ORDER BY priority, due_at, id LIMIT :limit"
    " FOR UPDATE SKIP LOCKED) UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1,"
    " lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => :lease), locked_by = :worker"
    " FROM picked WHERE jobs.id = picked.id RETURNING jobs.id")


def _probe_statement(unit: str) -> tuple[str, dict[str, Any]]:
    """The statement a seat of `unit` runs to claim, with its parameters (as the installed code builds it)."""
    kw: dict[str, Any] = {"queue": "callcenter", "worker": "seat:bench-probe", "now": datetime.now(UTC),
                          "lease_s": 60.0, "limit": 1, "kinds": ["call.operator"], "scope_prefix": unit}
    try:
        from shared.queue.service import claim_statement  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return _CLAIM_BEFORE_0019, {"queue": kw["queue"], "now": kw["now"], "kinds": kw["kinds"], "scope": unit + "%",
                                    "limit": 1, "lease": 60.0, "worker": kw["worker"]}
    return claim_statement(**kw)  # type: ignore[no-any-return,unused-ignore]


def _plan_nodes(node: dict[str, Any]) -> list[str]:
    """Every node of an EXPLAIN (FORMAT JSON) plan, depth first, as "Node Type [using index]"."""
    index = f" using {node['Index Name']}" if "Index Name" in node else ""
    found = [f"{node['Node Type']}{index}"]
    for child in node.get("Plans", []):
        found += _plan_nodes(child)
    return found


async def _probe_claims(db_url: str, stop: asyncio.Event, probe: _Probe) -> None:
    """A seat of a random district claims inside EXPLAIN ANALYZE, rolled back (its row is locked for a moment)."""
    from sqlalchemy import text

    engine = make_engine(db_url, pool_size=1, application_name="shouhu-bench-probe", audit_key=bench_audit_key())
    rng = random.Random(7)
    try:
        for n in range(100_000):  # bounded; ends with the mode
            empty = n % 4 == 3
            statement, params = _probe_statement(EMPTY_DISTRICT if empty else rng.choice(CLAIM_DISTRICTS))
            async with engine.connect() as conn:
                tx = await conn.begin()
                try:
                    raw = (await conn.execute(text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement),
                                              params)).scalar()
                finally:
                    await tx.rollback()
            plan = (orjson.loads(raw) if isinstance(raw, str | bytes) else raw)[0]
            nodes = _plan_nodes(plan["Plan"])
            top = plan["Plan"]
            buffers = int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))
            (probe.empty_ms if empty else probe.execution_ms).append(float(plan["Execution Time"]))
            (probe.empty_buffers if empty else probe.buffers).append(buffers)
            probe.sorts += any("Sort" in n for n in nodes)
            probe.nodes = probe.nodes or nodes
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
                return
            except TimeoutError:
                pass
    finally:
        await engine.dispose()


async def _claim_mode(mode: _Mode, db_url: str, ports: list[int], seats: list[tuple[str, str]], *, window_s: float,
                      talk_s: tuple[float, float] | None, claims: _Claims, procs: dict[str, int],
                      seed: int) -> None:
    """`mode.seats` operators claim for `window_s`: back to back (`talk_s` None), or talking a random time
    in `talk_s` between each claim and its disposition, their first claims spread over the mean talk time."""
    rng = random.Random(seed)
    chosen = list(enumerate(seats))[:mode.seats]  # units round-robin: the first N seats cover every district
    start = asyncio.Event()
    errors: list[str] = []
    reclaims: dict[str, list[str]] = {"doubled": [], "released": [], "reclaimed": []}  # what each was, verbatim
    stops = {"empty": 0, "time": 0, "errors": 0}
    last_claim = 0.0
    t_start = 0.0
    disposition = orjson.dumps({"disposition": "dissuaded"})
    offsets = [rng.uniform(0, sum(talk_s) / 2) if talk_s else 0.0 for _ in chosen]
    talks = [[rng.uniform(*talk_s) for _ in range(400)] if talk_s else [] for _ in chosen]

    async def operator(n: int, key_id: str, key: str, port: int) -> None:
        nonlocal last_claim
        http = _Http(port, key)
        failures = 0
        holding: str | None = None  # a task claimed and not yet disposed
        try:
            await start.wait()
            if talk_s is None:
                await asyncio.wait_for(http.open(), 30)  # not timed: a seat's connection is open before it claims
            else:
                await asyncio.sleep(offsets[n])
            for round_ in range(100_000):  # bounded; ends on the window, a 204 or errors
                if time.perf_counter() - t_start > window_s:
                    stops["time"] += 1
                    return
                if talk_s is not None:
                    # Idle for tens of seconds, as a browser would be: a fresh connection (not timed).
                    http.close()
                    await asyncio.wait_for(http.open(), 30)
                t0 = time.perf_counter()
                claims.asked_at[key_id] = t0  # from here on, what this seat held may have gone back to the queue
                status, data = await asyncio.wait_for(http.request("POST", "/v1/queue/next?held=release"), 90)
                t1 = time.perf_counter()
                if status == 204:
                    stops["empty"] += 1
                    return
                if status != 200:
                    mode.errors += 1
                    errors.append(f"POST /v1/queue/next: {_verbatim(status, data)}")
                    failures += 1
                    if failures >= OPERATOR_MAX_ERRORS:
                        stops["errors"] += 1
                        return
                    await asyncio.sleep(1.0)  # as a person would, before clicking again
                    continue
                mode.latencies.append((t1 - t0) * 1000)
                db_ms = _server_timing_ms(http.last_head)
                if db_ms is not None:
                    mode.db_ms.append(db_ms)
                last_claim = t1
                answer = orjson.loads(data)
                task_id = answer["task_id"]
                seen, what = claims.classify(task_id, key_id, mode=mode.name, answered_at=t1,
                                             now=datetime.now(UTC))
                if seen != "first":
                    setattr(mode, seen, getattr(mode, seen) + 1)
                    reclaims[seen].append(what)
                claim = _Claim(key_id, t1, datetime.fromisoformat(answer["claim_expires_at"]), mode.name)
                claims.latest[task_id] = claim
                holding = task_id
                if talk_s is not None:
                    remaining = window_s - (time.perf_counter() - t_start)
                    talk = talks[n][round_ % len(talks[n])]
                    if talk >= remaining:  # the window ends during this call: its disposition is not measured
                        stops["time"] += 1
                        return
                    await asyncio.sleep(talk)
                for _ in range(OPERATOR_MAX_ERRORS):
                    t2 = time.perf_counter()
                    status, data = await asyncio.wait_for(
                        http.request("POST", f"/v1/tasks/{task_id}/disposition", disposition), 90)
                    if status == 202:
                        mode.disposition_ms.append((time.perf_counter() - t2) * 1000)
                        claim.disposed = True
                        holding = None
                        break
                    mode.errors += 1
                    errors.append(f"POST /v1/tasks/{task_id}/disposition: {_verbatim(status, data)}")
                    failures += 1
                    if status < 500 or failures >= OPERATOR_MAX_ERRORS:  # a 409 will not change by retrying
                        stops["errors"] += 1
                        return
                    await asyncio.sleep(1.0)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            mode.errors += 1
            stops["errors"] += 1
            errors.append(f"operator {key_id}: {exc!r}")
        finally:
            http.close()
            if holding is not None:  # an operator who gave up after errors, or whose window ended mid-call
                mode.left_in_hand += 1

    tasks = [asyncio.create_task(operator(n, key_id, key, ports[i % len(ports)]))
             for n, (i, (key_id, key)) in enumerate(chosen)]
    probe_stop = asyncio.Event()
    prober = asyncio.create_task(_probe_claims(db_url, probe_stop, mode.probe))
    try:
        await asyncio.sleep(0.5)  # every coroutine is waiting at the start line
        with ProcCpu(procs) as cpu:
            t_start = time.perf_counter()
            start.set()
            await asyncio.wait_for(asyncio.gather(*tasks), window_s + 180)
            t_end = time.perf_counter()
        probe_stop.set()
        await asyncio.wait_for(prober, 60)
    finally:
        for task in [*tasks, prober]:
            task.cancel()
        await asyncio.gather(*tasks, prober, return_exceptions=True)
    if not mode.latencies:
        raise CallsBenchError(f"{mode.name}: no claim succeeded; first errors: {errors[:3]}")
    span = max(last_claim - t_start, 1e-9)
    mode.claims_per_s = len(mode.latencies) / span
    mode.dispositions_per_s = len(mode.disposition_ms) / max(t_end - t_start, 1e-9)
    mode.cpu = cpu.result
    mode.notes.append(
        f"claim phase, {mode.name}: {len(chosen)} operators, {len(mode.latencies)} claims in {span:.1f} s"
        f" ({mode.claims_per_s:.1f}/s), {len(mode.disposition_ms)} dispositions, {mode.doubled} double claims,"
        f" {mode.released} claims of tasks their seat left undisposed and returned with held=release,"
        f" {mode.reclaimed} re-claims of tasks left undisposed once their lease ran out; {mode.left_in_hand}"
        f" operators stopped holding a task; operators ended: {stops['empty']}"
        f" on 204, {stops['time']} on the {window_s:.0f} s window, {stops['errors']} after errors; phase took"
        f" {t_end - t_start:.1f} s")
    if mode.db_ms:
        mode.notes.append(
            f"claim phase, {mode.name}: the claim statement itself (Server-Timing, timed in the callcenter around"
            f" shared.queue.service.claim, so it includes the callcenter's event-loop delay): p50"
            f" {_percentile(mode.db_ms, 50):.1f} ms, p99 {_percentile(mode.db_ms, 99):.1f} ms,"
            f" max {max(mode.db_ms):.1f} ms ({len(mode.db_ms)})")
    if mode.probe.execution_ms:
        p = mode.probe
        mode.notes.append(
            f"claim phase, {mode.name}: the claim statement as PostgreSQL runs it under this load (EXPLAIN (ANALYZE,"
            f" BUFFERS) of a random district seat's claim every 0.5 s, rolled back): execution p50"
            f" {_percentile(p.execution_ms, 50):.2f} ms, p99 {_percentile(p.execution_ms, 99):.2f} ms,"
            f" buffers p50 {_percentile([float(b) for b in p.buffers], 50):.0f} max {max(p.buffers)};"
            f" {p.sorts} of {len(p.execution_ms) + len(p.empty_ms)} plans had a Sort node; plan:"
            f" {' <- '.join(p.nodes)}")
        if p.empty_ms:
            mode.notes.append(
                f"claim phase, {mode.name}: a seat of district {EMPTY_DISTRICT}, where nothing waits (its claim finds"
                f" nothing): execution p50 {_percentile(p.empty_ms, 50):.2f} ms, p99 {_percentile(p.empty_ms, 99):.2f}"
                f" ms, buffers p50 {_percentile([float(b) for b in p.empty_buffers], 50):.0f}")
    if mode.disposition_ms:
        mode.notes.append(f"claim phase, {mode.name}: dispositions p50 {_percentile(mode.disposition_ms, 50):.0f} ms,"
                          f" p99 {_percentile(mode.disposition_ms, 99):.0f} ms")
    for seen, found in reclaims.items():
        if found:
            mode.notes.append(f"claim phase, {mode.name}: {len(found)} claims {seen}; first:")
            mode.notes.extend(f"  {f}" for f in found[:5])
    if errors:
        mode.notes.append(f"claim phase, {mode.name}: {mode.errors} error answers; first (verbatim):")
        mode.notes.extend(f"  {e[:400]}" for e in errors[:5])
    mode.notes.append(f"CPU, claim phase, {mode.name}: {mode.cpu}")


async def _claims_phase(ports: list[int], seats: list[tuple[str, str]], db_url: str, plan: _Plan,
                        procs: dict[str, int]) -> tuple[_Mode, _Mode, list[str]]:
    notes: list[str] = []
    port_of = [ports[i % len(ports)] for i in range(len(seats))]

    # Every seat available (connections closed afterwards; uvicorn drops idle keep-alive connections after 5 s).
    todo = list(range(len(seats)))
    setup_deadline = time.monotonic() + 120

    async def setup() -> None:
        while todo:
            if time.monotonic() > setup_deadline:
                raise CallsBenchError(f"putting {len(seats)} seats available took over 120 s")
            i = todo.pop()
            http = _Http(port_of[i], seats[i][1])
            try:
                seat = await _json(http, "PUT", "/v1/seat", {"state": "available"})
            finally:
                http.close()
            if seat["state"] != "available":
                raise CallsBenchError(f"PUT /v1/seat answered {seat}")

    t_setup = time.perf_counter()
    await _run_all([setup() for _ in range(SETUP_CLIENTS)])
    notes.append(f"claim phase: {len(seats)} seats put available in {time.perf_counter() - t_setup:.1f} s")

    claims = _Claims()  # over both modes: a task left in hand in the first may be claimed in the second
    back = _Mode("back to back", seats=len(seats))
    handling = _Mode("with handling time", seats=plan.handling_seats)
    next_phone = 0
    for mode, window_s, talk_s in ((back, plan.back_to_back_s, None), (handling, plan.handling_s, plan.talk_s)):
        added, mode.queued_at_start, fill_s = await _fill_operator_queue(db_url, want=plan.tasks,
                                                                         first_phone=next_phone)
        next_phone += added
        notes.append(f"claim phase, {mode.name}: {added:,} tasks, cases and operator calls loaded with SQL in"
                     f" {fill_s:.1f} s (with VACUUM ANALYZE); {mode.queued_at_start:,} operator calls queued")
        await _claim_mode(mode, db_url, ports, seats, window_s=window_s, talk_s=talk_s, claims=claims,
                          procs=procs, seed=20261203)
    conn = await raw_connect(db_url)
    try:
        left = await conn.fetch("SELECT status, count(*) AS n FROM jobs WHERE kind = 'call.operator' GROUP BY status")
        shared_tasks = await conn.fetchval(_TASKS_WITH_TWO_OPERATOR_CALLS)
    finally:
        await conn.close()
    notes.append(f"claim phase: call.operator jobs left by status {dict((r['status'], r['n']) for r in left)};"
                 f" tasks with more than one queued or running operator call: {shared_tasks}")
    return back, handling, notes


# ---- the benchmark --------------------------------------------------------------------------------------------


def _error_summary(line: str) -> str:
    """A JSON log line as its event and the last line of its exception (what was raised); other lines as they are."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if not isinstance(entry, dict):
        return line
    event = str(entry.get("event", "")).strip()
    exception = str(entry.get("exception", "")).strip().splitlines() or str(entry.get("error") or "").splitlines()
    return f"{entry.get('timestamp', '')} {event}" + (f": {exception[-1]}" if exception else "")


async def bench_calls(quick: bool) -> dict[str, float]:
    """Automated calls per second within Twilio's limit (never twice), acknowledgement to Twilio cancel, how long a
    citizen pressing 2 waits for a seat, and seat claim latency under 1,600 seats."""
    from shared.auth.service import create_key
    replicas = _replicas_from_env()
    plan = _Plan.of(quick)
    # For working on the claims alone: SHOUHU_BENCH_CALLS_PHASES=claims skips phase 1 (its figures are then absent).
    claims_only = os.environ.get("SHOUHU_BENCH_CALLS_PHASES", "").strip() == "claims"
    report = _Report()
    report.notes.append(await machine_idle_note())
    services: list[tuple[str, Any]] = []
    async with bench_database() as db_url:
        engine = make_engine(db_url, pool_size=1, application_name="shouhu-bench", audit_key=bench_audit_key())
        try:
            async with transaction(make_sessionmaker(engine)) as session:
                _, ingest_key = await create_key(session, role="ingest", unit="", name="bench")
                _, supervisor_key = await create_key(session, role="supervisor", unit="", name="bench-supervisor")
                # The transfer phase's seats: Hangzhou's, which are rung, and two of Ningbo's, which must not be.
                local_seats, other_seats = [], []
                for i in range(TRANSFER_SEATS_PER_CITIZEN * plan.transfers):
                    row, full = await create_key(session, role="operator", unit="3301", name=f"bench-desk-{i:03d}")
                    local_seats.append((row.key_id, full))
                for i in range(2):
                    row, full = await create_key(session, role="operator", unit="3302", name=f"bench-far-{i}")
                    other_seats.append((row.key_id, full))
                seats: list[tuple[str, str]] = []
                for i in range(OPERATORS):
                    row, full = await create_key(session, role="operator",
                                                 unit=CLAIM_DISTRICTS[i % len(CLAIM_DISTRICTS)],
                                                 name=f"bench-seat-{i:04d}")
                    seats.append((row.key_id, full))
        finally:
            await engine.dispose()

        sandbox_port, dispatcher_port, first_port, *cc_ports = _free_ports(3 + replicas)
        sandbox = ServerProcess("sandbox", ["sandbox"], sandbox_port, {**os.environ, "SHOUHU_LOG_LEVEL": "WARNING"},
                           "/healthz")
        dispatcher = _Dispatcher(db_url, dispatcher_port)
        services += [("sandbox", sandbox), ("dispatcher", dispatcher)]
        gen = _Records(seed=20261122)
        async with AsyncExitStack() as stack:
            await _start(stack, [sandbox, dispatcher])
            if not claims_only:
                # 1. One callcenter with its worker on (its pacing is per Twilio account, shared through the database).
                async with AsyncExitStack() as phase1:
                    caller = _callcenter("callcenter-calls", db_url, first_port, sandbox_port, worker=True)
                    services.append(("callcenter (calls)", caller))
                    await _start(phase1, [caller])
                    calls = await _calls_phase(sandbox_port, dispatcher_port, ingest_key, db_url, gen, plan,
                                               {"sandbox": sandbox.pid, "dispatcher": dispatcher.proc.pid,  # type: ignore[union-attr]
                                                "callcenter": caller.pid})
                    acks = await _ack_phase(sandbox_port, dispatcher_port, ingest_key, supervisor_key, gen, plan)
                    transfers = await _transfer_phase(sandbox_port, dispatcher_port, first_port, ingest_key, db_url,
                                                      gen, plan, local_seats, other_seats)
            # 2. Fresh callcenter replicas without the worker; the queue is filled before each mode.
            async with AsyncExitStack() as phase2:
                seat_servers = [_callcenter(f"callcenter-r{i}", db_url, port, sandbox_port, worker=False)
                                for i, port in enumerate(cc_ports)]
                services += [(f"callcenter r{i}", s) for i, s in enumerate(seat_servers)]
                await _start(phase2, seat_servers)
                procs = {"dispatcher": dispatcher.proc.pid}  # type: ignore[union-attr]
                procs |= {f"callcenter r{i}": s.pid for i, s in enumerate(seat_servers)}
                back, handling, claim_notes = await _claims_phase(cc_ports, seats, db_url, plan, procs)

    figures: dict[str, float] = {}
    if not claims_only:
        figures |= _report_calls(report, calls, acks, transfers)
    figures |= _report_claims(report, back, handling, claim_notes, replicas)
    report.notes.append(
        f"database server: {_describe(db_url)}; sandbox port {sandbox_port},"
        f" dispatcher port {dispatcher_port} (1 process); call phase: 1 callcenter process with its worker on"
        f" (port {first_port}); claim phase: {replicas} callcenter replica(s) on one database, worker off"
        f" (ports {', '.join(map(str, cc_ports))}), clients spread round-robin")
    for label, service in services:
        if service.errors:
            report.notes.append(f"{label} log errors (first {len(service.errors)}; event and the exception's (or error's) last"
                                f" line, verbatim):")
            report.notes.extend(f"  {_error_summary(line)[:400]}" for line in service.errors)
    report.print()
    return figures


def _report_calls(report: _Report, calls: _Calls, acks: _Acks, transfers: _Transfers) -> dict[str, float]:
    """The rows, notes and figures of phase 1 (automated calls, acknowledgements, transfers)."""
    from services.callcenter.calls.pacing import pacing_interval_s

    ceiling = 1 / pacing_interval_s(SANDBOX_CALLS_PER_S)
    report.add("calls_per_s", [calls.rate], f"calls/s ({calls.created} calls, sandbox creation times, first to last)")
    report.add("calls_429", [calls.stats["rejected_429"]], "refused by the sandbox as over 10/s")
    report.add("calls_placed_twice", [calls.placed_twice], "calls beyond one per task phone")
    report.add("calls_max_in_any_second", [calls.stats["max_calls_in_any_second"]], "calls (sandbox allows 10)")
    if not acks.latencies_ms or not acks.baseline_ms:
        raise CallsBenchError("no acknowledgement was timed to its Twilio cancel")
    for name, values, what in (("ack_to_cancel", acks.latencies_ms, "POST feedback -> Twilio cancel at the sandbox"),
                               ("ack_to_cancel_baseline", acks.baseline_ms, "the cancel request alone")):
        for pct in (50, 99):
            report.rows.append((f"{name}_p{pct}_ms", len(values), _percentile(values, pct), min(values), max(values),
                                f"ms ({what})"))
    report.add("ack_calls_not_cancelled", [acks.not_cancelled], "acknowledged robocalls not ended canceled")
    report.add("ack_retry_calls", [acks.retry_calls], "calls after an acknowledgement")
    if not transfers.waits_s:
        raise CallsBenchError("no citizen pressing 2 was bridged to a seat")
    for name, values, what in (("transfer_wait", transfers.waits_s, "key 2 -> bridged to a seat"),
                               ("transfer_ring_baseline", transfers.ring_baseline_s,
                                f"the seat leg's ring: network + a person answering after {SEAT_RING_S:.0f} s")):
        for pct in (50, 95):
            report.rows.append((f"{name}_p{pct}_s", len(values), _percentile(values, pct), min(values), max(values),
                                f"s ({what})"))
    report.add("transfers_other_unit_rung", [transfers.other_unit_rung], "calls to another unit's seats")
    polled = f"{calls.polled_rate:.2f}" if calls.polled_rate is not None else "n/a"
    report.notes.append(
        f"call phase: SHOUHU_CALLS_PER_S={SANDBOX_CALLS_PER_S}; the pacer's interval is"
        f" 1/{SANDBOX_CALLS_PER_S} s + its fixed 50 ms margin = {1000 / ceiling:.0f} ms, a ceiling of"
        f" {ceiling:.2f} calls/s; measured {calls.rate:.2f} calls/s (our polling of the counter: {polled})"
        + ("; the pacer alone keeps the service BELOW the 9.5 calls/s target (services/callcenter/calls/pacing.py)"
           if ceiling < 9.5 else ""))
    report.notes.extend(calls.notes)
    report.notes.extend(acks.notes)
    report.notes.extend(transfers.notes)
    report.notes.append(f"CPU, call phase (warnings posted to the last call created): {calls.cpu}")
    return {
        "calls_per_s": round(calls.rate, 2),
        "calls_429": float(calls.stats["rejected_429"]),
        "calls_placed_twice": float(calls.placed_twice),
        "calls_max_in_any_second": float(calls.stats["max_calls_in_any_second"]),
        "ack_to_cancel_p50_ms": round(_percentile(acks.latencies_ms, 50), 1),
        "ack_to_cancel_p99_ms": round(_percentile(acks.latencies_ms, 99), 1),
        "ack_to_cancel_baseline_p50_ms": round(_percentile(acks.baseline_ms, 50), 1),
        "ack_to_cancel_baseline_p99_ms": round(_percentile(acks.baseline_ms, 99), 1),
        "ack_calls_not_cancelled": float(acks.not_cancelled),
        "ack_retry_calls": float(acks.retry_calls),
        "transfer_wait_p50_s": round(_percentile(transfers.waits_s, 50), 3),
        "transfer_wait_p95_s": round(_percentile(transfers.waits_s, 95), 3),
        "transfer_ring_baseline_p50_s": round(_percentile(transfers.ring_baseline_s, 50), 3),
        "transfer_ring_baseline_p95_s": round(_percentile(transfers.ring_baseline_s, 95), 3),
        "transfers_other_unit_rung": float(transfers.other_unit_rung),
    }


def _report_claims(report: _Report, back: _Mode, handling: _Mode, notes: list[str], replicas: int) -> dict[str, float]:
    """The rows, notes and figures of phase 2; claim_p50_ms / claim_p99_ms are the worse of the two modes."""
    servers = f"{replicas} callcenter replica{'s' if replicas > 1 else ''}"
    figures: dict[str, float] = {}
    for mode, suffix in ((back, "back_to_back"), (handling, "handling")):
        lat = mode.latencies
        for pct in (50, 99):
            report.rows.append((f"claim_p{pct}_ms_{suffix}", len(lat), _percentile(lat, pct), min(lat), max(lat),
                                f"ms (POST /v1/queue/next -> 200; {mode.seats} operators {mode.name}, {servers})"))
            figures[f"claim_p{pct}_ms_{suffix}"] = round(_percentile(lat, pct), 1)
        if mode.db_ms:
            for pct in (50, 99):
                report.rows.append((f"claim_db_p{pct}_ms_{suffix}", len(mode.db_ms), _percentile(mode.db_ms, pct),
                                    min(mode.db_ms), max(mode.db_ms), "ms (the claim statement, Server-Timing)"))
                figures[f"claim_db_p{pct}_ms_{suffix}"] = round(_percentile(mode.db_ms, pct), 2)
        if mode.probe.execution_ms:
            ex = mode.probe.execution_ms
            for pct in (50, 99):
                report.rows.append((f"claim_sql_p{pct}_ms_{suffix}", len(ex), _percentile(ex, pct), min(ex), max(ex),
                                    "ms (EXPLAIN ANALYZE execution time of a district claim, under the load)"))
                figures[f"claim_sql_p{pct}_ms_{suffix}"] = round(_percentile(ex, pct), 3)
            if mode.probe.empty_ms:
                figures[f"claim_sql_empty_unit_p50_ms_{suffix}"] = round(_percentile(mode.probe.empty_ms, 50), 3)
        report.add(f"claims_per_s_{suffix}", [mode.claims_per_s], f"claims/s ({mode.name})")
        figures[f"claims_per_s_{suffix}"] = round(mode.claims_per_s, 1)
    for pct in (50, 99):
        worst = max(_percentile(back.latencies, pct), _percentile(handling.latencies, pct))
        report.rows.append((f"claim_p{pct}_ms", 2, worst, worst, worst, "ms (the worse of the two modes)"))
        figures[f"claim_p{pct}_ms"] = round(worst, 1)
    doubled = back.doubled + handling.doubled
    errors = back.errors + handling.errors
    report.add("claims_per_s", [back.claims_per_s], "claims/s back to back (what the system can take)")
    report.add("claims_doubled", [doubled], "claims of a task another seat held, or of one already disposed")
    report.add("claim_errors", [errors], "answers other than 200/204/202")
    released = back.released + handling.released
    reclaimed = back.reclaimed + handling.reclaimed
    report.add("claims_released", [released], "tasks left undisposed, returned by their seat's next claim and"
                                              " claimed by another (correct)")
    report.add("claims_reclaimed", [reclaimed], "tasks left undisposed, claimed again after their lease (correct)")
    figures |= {"claims_released": float(released), "claims_reclaimed": float(reclaimed)}
    figures |= {"claims_per_s": round(back.claims_per_s, 1), "claims_doubled": float(doubled),
                "claim_errors": float(errors), "claim_queued_jobs": float(min(back.queued_at_start,
                                                                              handling.queued_at_start))}

    report.notes.append(
        f"claim phase: {OPERATORS} operator keys over {len(CLAIM_DISTRICTS)} district units"
        f" ({OPERATORS // len(CLAIM_DISTRICTS)} seats each), tiers 10% high / 30% medium / 60% low, deadlines"
        f" from the default policy, {CALLBACK_SHARE:.0%} of the calls waiting for a later hour (callbacks)")
    rate = back.claims_per_s + back.dispositions_per_s
    report.notes.append(
        f"claim phase: Little's law, back to back: {back.seats} operators with no think time keep ~{back.seats}"
        f" requests in flight; at {back.claims_per_s:.0f} claims/s + {back.dispositions_per_s:.0f} dispositions/s"
        f" the mean answer is bound to take ~{back.seats / max(rate, 1e-9) * 1000:.0f} ms whatever the query does:"
        f" that mode measures the machine's throughput (CPU below), the handling mode the latency an operator sees;"
        f" the claim statement's own time is claim_db_*")
    notes_all = notes + back.notes + handling.notes
    report.notes.extend(notes_all)
    return figures
