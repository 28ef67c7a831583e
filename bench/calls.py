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

2. Seat claims. The brief's 1,600 concurrent operators (580 PC seats and
   1,000 desk phones): 1,600 operator keys, created directly in the database
   with ``create_key``, their units spread evenly over three cities (3301
   Hangzhou, 3302 Ningbo, 3201 Nanjing). M tasks wait in the operator queue
   (6,000; 1,600 with --quick), spread evenly over the same cities. The
   quickest honest way to get them there: the warnings are ingested through
   the dispatcher (POST /v1/warnings/batch, 1,000 per request, the usual tier
   mix, every phone new, so every warning opens its own case and task), and
   then one ``OperatorCall`` job per task is enqueued directly with
   ``shared.queue.service.enqueue`` (the contract's payload, attempt 100 so it
   never collides with the task's own plan, the task's unit as scope and its
   deadline as due_at, run now), as the dispatcher's own timers would do 10
   minutes (high tier) to hours later.

   The callcenter runs as R replicas on the one database (R from
   ``SHOUHU_BENCH_REPLICAS``, default 2, as the ingest bench scales the
   dispatcher; docker-compose scales the callcenter the same way), each with
   SHOUHU_CALLCENTER_WORKER=false so no automated call interferes. These are
   fresh processes: the callcenter of (1) is stopped first. Client i talks to
   replica i % R. Every client first puts its seat available
   (PUT /v1/seat), then closes its connection; at the start signal each opens
   one keep-alive connection (not timed) and loops: POST /v1/queue/next, and
   on 200 POST /v1/tasks/{id}/disposition {"disposition": "dissuaded"}, until
   a 204 (nothing left in its unit); bounded in count and time.

   - ``claim_p50_ms`` / ``claim_p99_ms``: from just before a
     POST /v1/queue/next is sent to its 200 answer (nearest-rank percentiles
     over every successful claim; the 204s are not claims and are left out).
   - ``claims_per_s``: successful claims per second, from the start signal to
     the last claim's answer.
   - ``claims_doubled``: claims of a task some seat had already claimed
     (every claimed task id is kept with the seat that got it). Must be 0.
   - ``claim_errors``: answers other than 200/204 (claims) and 202
     (dispositions), and connections that failed; the first few are printed
     verbatim, with the servers' logged exceptions. An operator who gets an
     error answer tries again after 1 s, as a person would, and stops after
     5 errors (or at once on a 4xx to a disposition, which retrying cannot
     change).

   Read the latency with Little's law in mind: the clients have no think
   time, so about 1,600 claims or dispositions are always in flight, and the
   average latency is ~1,600 / (requests per second) whatever the code does;
   at a few hundred claims per second that is seconds, not milliseconds. Real
   operators spend minutes on each call between claims. The figure says how
   the queue behaves under that worst-case burst, and the CPU notes say what
   bounds the rate.

What bounds the claim figures (observed while writing this, 2 cores, PostgreSQL 15 on 127.0.0.1): PostgreSQL.
Sampling pg_stat_activity every 100 ms through a --quick claim phase found the callcenters' backends on CPU in
the claim statement (``seats.service.claim_next``) in ~80% of the active-backend samples, far ahead of the rest. That
statement joins every queued job of the "callcenter" queue (the waiting ``call.auto`` jobs included: the index
it uses, ix_jobs_ready, is on (queue, priority, run_at), and kind is filtered afterwards) with its task and
sorts them all, for every claim, so its cost grows with the queue: EXPLAIN ANALYZE alone, with 6,000
operator and 6,000 automated-call jobs queued, 13-14 ms; under 40 concurrent claims each one also steps over
the rows the others just claimed. Each replica's pool (SHOUHU_DB_POOL_SIZE=10 plus 10 overflow) then holds
about 800 waiting requests, and a request that waits more than SQLAlchemy's default 30 s for a connection is
answered 500 (the claim_errors, retried by the operators).

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
# Callcenter settings that would change what is measured if inherited from the caller's environment.
CALLCENTER_ENV_DROPPED = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "SHOUHU_SANDBOX_URL",
                          "SHOUHU_CALLCENTER_WORKER_CONCURRENCY", "SHOUHU_WORKER_POLL_INTERVAL_S",
                          "SHOUHU_DAILY_CALL_CAP", "SHOUHU_POLICY")


@dataclass(frozen=True)
class _Plan:
    calls: int
    tasks: int
    calls_max_s: float  # for the sandbox to create every call
    claims_max_s: float  # for the whole claiming phase
    acks: int  # robocalls cancelled by an acknowledgement (and as many baseline cancels)
    transfers: int  # citizens pressing 2

    @classmethod
    def of(cls, quick: bool) -> _Plan:
        if quick:
            return cls(calls=60, tasks=1600, calls_max_s=60, claims_max_s=120, acks=20, transfers=10)
        return cls(calls=300, tasks=6000, calls_max_s=150, claims_max_s=420, acks=100, transfers=40)


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
            "SHOUHU_LOG_LEVEL": "WARNING", "SHOUHU_CALLCENTER_WORKER": "true" if worker else "false"}
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
class _Claims:
    latencies: list[float]
    disposition_ms: list[float]
    claims_per_s: float
    doubled: int
    errors: int
    cpu: str
    notes: list[str] = field(default_factory=list)


async def _fill_operator_queue(dispatcher_port: int, key: str, db_url: str, gen: _Records, plan: _Plan) -> list[str]:
    """M warnings through the dispatcher (every phone new: M tasks), then one operator-call job per task."""
    from shared import contracts
    from shared.contracts import PRIORITY
    from shared.phone import normalize_phone
    from shared.queue.service import enqueue

    units = list(UNITS)
    wires = []
    for i in range(plan.tasks):
        codes = UNITS[units[i % len(units)]]
        wires.append(gen.one().wire | {"region_code": codes[(i // len(units)) % len(codes)]})
    bodies = [orjson.dumps({"warnings": wires[i:i + CLAIM_BATCH]}) for i in range(0, plan.tasks, CLAIM_BATCH)]
    results = await _ingest(dispatcher_port, key, bodies, concurrency=2, max_s=120)
    task_ids = [r["task_id"] for r in results]
    if len(set(task_ids)) != plan.tasks:
        raise CallsBenchError(f"{plan.tasks} warnings made {len(set(task_ids))} tasks (some merged)")
    engine = make_engine(db_url, pool_size=1, application_name="shouhu-bench", audit_key=bench_audit_key())
    try:
        now = datetime.now(UTC)
        # Attempt 100: past any operator call the tasks' own plans may have queued meanwhile.
        jobs = [contracts.OperatorCall(
            task_id=r["task_id"], case_id=r["case_id"], channel="operator_call", attempt=100, tier=r["tier"],
            phone=normalize_phone(w["phone"]), region_code=w["region_code"], fraud_type=w["fraud_type"],
            due_at=r["due_at"], reason="benchmark").job(
                run_at=now, task_id=uuid.UUID(r["task_id"]), priority=PRIORITY[r["tier"]],
                dedupe_key=f"operator_call:{r['task_id']}:100", scope=w["region_code"],
                due_at=datetime.fromisoformat(r["due_at"]))
            for r, w in zip(results, wires, strict=True)]
        async with transaction(make_sessionmaker(engine)) as session:
            for i in range(0, len(jobs), 1000):
                await enqueue(session, jobs[i:i + 1000], now=now)
    finally:
        await engine.dispose()
    conn = await raw_connect(db_url)
    try:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE kind = 'call.operator' AND status = 'queued' AND payload->>'attempt' = '100'")
    finally:
        await conn.close()
    if waiting != plan.tasks:
        raise CallsBenchError(f"{waiting} call.operator jobs wait in the queue, not {plan.tasks}")
    return [r["tier"] for r in results]


async def _claims_phase(ports: list[int], seats: list[tuple[str, str]], db_url: str, plan: _Plan,
                        procs: dict[str, int]) -> _Claims:
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

    start = asyncio.Event()
    latencies: list[float] = []
    disposition_ms: list[float] = []
    claimed_by: dict[str, str] = {}
    doubled = 0
    errors: list[str] = []
    error_count = 0
    connected = 0
    empties = 0
    timed_out = 0
    gave_up = 0
    last_claim = 0.0
    t_start = 0.0
    disposition = orjson.dumps({"disposition": "dissuaded"})

    async def operator(i: int) -> None:
        """One seat: connect at the start signal, then work until its unit's queue is empty."""
        nonlocal error_count, connected, gave_up
        key_id, key = seats[i]
        http = _Http(port_of[i], key)
        try:
            await start.wait()
            await asyncio.wait_for(http.open(), 30)  # not timed: a seat's connection is open before it claims
            connected += 1
            await work(key_id, http)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            error_count += 1
            gave_up += 1
            errors.append(f"operator {key_id}: {exc!r}")
        finally:
            http.close()

    async def work(key_id: str, http: _Http) -> None:
        """Claim, dispose, repeat until 204 (bounded in count and time); an error answer is retried after 1 s."""
        nonlocal doubled, error_count, empties, timed_out, gave_up, last_claim
        failures = 0
        for _ in range(plan.tasks + OPERATOR_MAX_ERRORS + 2):
            if time.perf_counter() - t_start > plan.claims_max_s:
                timed_out += 1
                return
            t0 = time.perf_counter()
            status, data = await asyncio.wait_for(http.request("POST", "/v1/queue/next"), 60)
            t1 = time.perf_counter()
            if status == 204:
                empties += 1
                return
            if status != 200:
                error_count += 1
                errors.append(f"POST /v1/queue/next: {_verbatim(status, data)}")
                failures += 1
                if failures >= OPERATOR_MAX_ERRORS:
                    gave_up += 1
                    return
                await asyncio.sleep(1.0)  # as a person would, before clicking again
                continue
            latencies.append((t1 - t0) * 1000)
            last_claim = t1
            task_id = orjson.loads(data)["task_id"]
            if task_id in claimed_by:
                doubled += 1
                errors.append(f"task {task_id} claimed by seat {key_id} after seat {claimed_by[task_id]}")
            else:
                claimed_by[task_id] = key_id
            for _ in range(OPERATOR_MAX_ERRORS):
                t2 = time.perf_counter()
                status, data = await asyncio.wait_for(
                    http.request("POST", f"/v1/tasks/{task_id}/disposition", disposition), 60)
                if status == 202:
                    disposition_ms.append((time.perf_counter() - t2) * 1000)
                    break
                error_count += 1
                errors.append(f"POST /v1/tasks/{task_id}/disposition: {_verbatim(status, data)}")
                failures += 1
                if status < 500 or failures >= OPERATOR_MAX_ERRORS:  # a 409 will not change by retrying
                    gave_up += 1
                    return
                await asyncio.sleep(1.0)

    tasks = [asyncio.create_task(operator(i)) for i in range(len(seats))]
    try:
        await asyncio.sleep(0.5)  # every coroutine is waiting at the start line
        with ProcCpu(procs) as cpu:
            t_start = time.perf_counter()
            start.set()
            await asyncio.wait_for(asyncio.gather(*tasks), plan.claims_max_s + 90)
            t_end = time.perf_counter()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if not latencies:
        raise CallsBenchError(f"no claim succeeded; first errors: {errors[:3]}")
    conn = await raw_connect(db_url)
    try:
        left = await conn.fetch(
            "SELECT status, count(*) AS n FROM jobs WHERE kind = 'call.operator' GROUP BY status")
    finally:
        await conn.close()
    notes.append(f"claim phase: {connected} of {len(seats)} operators connected at once (one keep-alive"
                 f" connection each); {len(latencies)} claims, {len(claimed_by)} distinct tasks of {plan.tasks};"
                 f" {empties} operators ended on 204, {timed_out} on the time limit, {gave_up} after errors; phase took"
                 f" {t_end - t_start:.1f} s; call.operator jobs left by status"
                 f" {dict((r['status'], r['n']) for r in left) or '{} (all done)'}")
    if disposition_ms:
        notes.append(f"claim phase: dispositions p50 {_percentile(disposition_ms, 50):.0f} ms,"
                     f" p99 {_percentile(disposition_ms, 99):.0f} ms ({len(disposition_ms)})")
    if errors:
        notes.append(f"claim phase: {error_count} error answers, {doubled} double claims; first (verbatim):")
        notes.extend(f"  {e[:400]}" for e in errors[:5])
    span = max(last_claim - t_start, 1e-9)
    return _Claims(latencies, disposition_ms, len(latencies) / span, doubled, error_count, cpu.result, notes)


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
    exception = str(entry.get("exception", "")).strip().splitlines()
    return f"{entry.get('timestamp', '')} {event}" + (f": {exception[-1]}" if exception else "")


async def bench_calls(quick: bool) -> dict[str, float]:
    """Automated calls per second within Twilio's limit (never twice), acknowledgement to Twilio cancel, how long a
    citizen pressing 2 waits for a seat, and seat claim latency under 1,600 seats."""
    from shared.auth.service import create_key
    replicas = _replicas_from_env()
    plan = _Plan.of(quick)
    report = _Report()
    report.notes.append(await machine_idle_note())
    services: list[tuple[str, Any]] = []
    async with bench_database() as db_url:
        engine = make_engine(db_url, pool_size=1, application_name="shouhu-bench", audit_key=bench_audit_key())
        try:
            units = list(UNITS)
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
                    row, full = await create_key(session, role="operator", unit=units[i % len(units)],
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
            # 1. One callcenter with its worker on (its pacing is per Twilio account, shared through the database).
            async with AsyncExitStack() as phase1:
                caller = _callcenter("callcenter-calls", db_url, first_port, sandbox_port, worker=True)
                services.append(("callcenter (calls)", caller))
                await _start(phase1, [caller])
                calls = await _calls_phase(sandbox_port, dispatcher_port, ingest_key, db_url, gen, plan,
                                           {"sandbox": sandbox.pid, "dispatcher": dispatcher.proc.pid,  # type: ignore[union-attr]
                                            "callcenter": caller.pid})
                acks = await _ack_phase(sandbox_port, dispatcher_port, ingest_key, supervisor_key, gen, plan)
                transfers = await _transfer_phase(sandbox_port, dispatcher_port, first_port, ingest_key, db_url, gen,
                                                  plan, local_seats, other_seats)
            # 2. Fresh callcenter replicas without the worker; the queue is filled before they start.
            tiers = await _fill_operator_queue(dispatcher_port, ingest_key, db_url, gen, plan)
            async with AsyncExitStack() as phase2:
                seat_servers = [_callcenter(f"callcenter-r{i}", db_url, port, sandbox_port, worker=False)
                                for i, port in enumerate(cc_ports)]
                services += [(f"callcenter r{i}", s) for i, s in enumerate(seat_servers)]
                await _start(phase2, seat_servers)
                procs = {"dispatcher": dispatcher.proc.pid}  # type: ignore[union-attr]
                procs |= {f"callcenter r{i}": s.pid for i, s in enumerate(seat_servers)}
                claims = await _claims_phase(cc_ports, seats, db_url, plan, procs)

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
    lat = claims.latencies
    for pct in (50, 99):
        report.rows.append((f"claim_p{pct}_ms", len(lat), _percentile(lat, pct), min(lat), max(lat),
                            f"ms (POST /v1/queue/next -> 200; {OPERATORS} operators, {replicas} callcenter"
                            f" replica{'s' if replicas > 1 else ''})"))
    report.add("claims_per_s", [claims.claims_per_s], "claims/s (start to last claim)")
    report.add("claims_doubled", [claims.doubled], "tasks claimed by a second seat")
    report.add("claim_errors", [claims.errors], "answers other than 200/204/202")

    report.notes.append(
        f"database server: {_describe(db_url)}; sandbox port {sandbox_port},"
        f" dispatcher port {dispatcher_port} (1 process); call phase: 1 callcenter process with its worker on"
        f" (port {first_port}); claim phase: {replicas} callcenter replica(s) on one database, worker off"
        f" (ports {', '.join(map(str, cc_ports))}), clients spread round-robin")
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
    mix = {t: tiers.count(t) for t in ("high", "medium", "low")}
    report.notes.append(f"claim phase: {plan.tasks} tasks waiting (tiers {mix}) over units {', '.join(UNITS)}"
                        f" ({OPERATORS} operator keys, round-robin over the units)")
    report.notes.append(
        f"claim phase: Little's law: {OPERATORS} operators with no think time keep ~{OPERATORS} requests in flight;"
        f" at {claims.claims_per_s:.0f} claims/s (each followed by a disposition) the mean wait is bound to be"
        f" ~{OPERATORS / max(2 * claims.claims_per_s, 1e-9) * 1000:.0f} ms per request whatever the code does")
    report.notes.extend(claims.notes)
    report.notes.append(f"CPU, claim phase: {claims.cpu}")
    for label, service in services:
        if service.errors:
            report.notes.append(f"{label} log errors (first {len(service.errors)}; event and the exception's last"
                                f" line, verbatim):")
            report.notes.extend(f"  {_error_summary(line)[:400]}" for line in service.errors)
    report.print()
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
        "claim_p50_ms": round(_percentile(lat, 50), 1),
        "claim_p99_ms": round(_percentile(lat, 99), 1),
        "claims_per_s": round(claims.claims_per_s, 1),
        "claims_doubled": float(claims.doubled),
        "claim_errors": float(claims.errors),
    }
