"""`shouhu bench faults`: crash drills under load. What is lost when processes die, the database restarts,
and Telegram or Twilio misbehave?

The set-up, all on 127.0.0.1 and all started (and stopped) by this benchmark (the pieces are bench/cluster.py's):

- a private PostgreSQL 15 (``initdb`` / ``pg_ctl`` from ``SHOUHU_PG_BIN``, default
  /usr/lib/postgresql/15/bin) in a temporary directory on a free port, migrated as ``shouhu up`` does (owner
  URL, audit key and services' password made for the run). It is the only server the drills restart; no other
  server is touched. As root, the PostgreSQL commands run as the ``postgres`` user (initdb refuses root).
- the sandbox (``shouhu sandbox``: fake Telegram Bot API and Twilio), phone time 20x faster (time_scale 0.05),
  Telegram's limits (30 messages/s per bot, 1/s per chat), 20 calls/s per account;
- two replicas of each service (``shouhu serve dispatcher|bot|callcenter``), each its own process (its own
  session, so ``kill -9`` is real and cleanup can take its whole group) on its own port, with the services'
  default settings except: SHOUHU_CALLS_PER_S=10, SHOUHU_DB_POOL_SIZE=5, the call durations scaled to the
  sandbox's phone time (``PHONE_TIME_SETTINGS``: longest script 8 s, transfer ring 5 s, reconciliation sweep
  every 10 s; they exist once calls are reconciled with Twilio), and a drill policy (the built-in one
  with the high tier's operator call after 15 s and its automated-call retries after 15 s, so the seats and the
  retries have work within minutes). Each pair shares one public address, a round-robin TCP proxy in this
  process that skips a replica refusing connections (what a load balancer or DNS round robin in front of two
  replicas does): Twilio's webhooks go to the callcenters' (CALLCENTER_PUBLIC_URL), Telegram's updates to the
  bots' (TELEGRAM_WEBHOOK_URL: two bots cannot both long-poll one token; Telegram answers one of them 409
  Conflict, and aiogram backs off for up to 5 s each time, so button presses wait seconds).

The load, while the drills run (150 s, 60 s with --quick; longer if a drill starts late):

- ingest: 50 warnings/s through POST /v1/warnings (one record per request, an ingest key, alternating between
  the dispatcher replicas; a request answered 5xx or cut off is retried after 0.5 s on the other replica with
  the same source_ref, which the API makes idempotent). Tiers by signal: 10% high, 40% medium, 50% low; every
  phone new; 40% of phones have a Telegram chat bound to them (made through the sandbox and written to the
  bot's tables, as bench/bot.py does). 40% of the high tier's phones press 1 when called, 20% are busy, the rest
  answer and say nothing (sandbox number scripts).
- citizens: every second the sandbox's chat list is read; 60% of new alerts get their first button pressed.
- seats: 8 operators (unit 33) put their seat available, claim (POST /v1/queue/next), "talk" 0.3 s and post a
  disposition, alternating replicas when one does not answer.

The drills, in turn (offsets in ``_Plan``): ``kill -9`` of one replica of the dispatcher, the bot, the
callcenter (each restarted 4 s later, and again every 2 s until it stays up, as a supervisor would); ``pg_ctl restart -m fast`` of the private PostgreSQL; a Telegram 429
storm (every Bot API method, 10 s, retry_after 3) together with a 403 wave (5% of the chats block the bot);
Twilio 429 (20429) for 6 s, then 500 for 3 s and 503 for 3 s on the REST API. Then the load stops, and the
system is left to settle: until no call attempt is in flight, no job runs and none is due on the workers'
queues (bounded: 90 s, 60 s with --quick). Then it is counted:

- ``faults_warnings_lost``: source_refs the API acknowledged (200/201) that are not in ``warnings``.
- ``faults_tasks_without_jobs``: open tasks (``status <> 'closed'``) with no live job: no row in ``jobs`` in
  status queued or running whose ``task_id`` is the task, or whose payload's ``task_id`` is (a channel result
  on its way to the dispatcher). Dead letters (status failed) are not live. How many open tasks wait only on
  people (an operator-call job, claimable by seats) is printed.
- ``faults_outcomes_lost``: call attempts (``call_attempts``) still not in a final state after settling (the
  callcenter's own list of final states, ``uncertain`` included: an uncertain attempt did report "failed").
  Final attempts with no outcome reported, and uncertain ones, are printed.
- ``faults_double_calls``: from the Twilio sandbox's own call log (read every 2 s during the run, since it
  forgets finished calls past 2,000): calls beyond the first per attempt (the ``attempt`` id in the call's
  TwiML URL; one attempt is one task, channel and attempt number, unique in ``call_attempts``).
- ``faults_double_alerts``: from the Telegram sandbox's own conversations: alert messages (those with the
  alert's feedback buttons, whose data names the task) per chat and task, beyond the number of bot_alert
  attempts the dispatcher made for that task (``tasks.attempts``).
- ``faults_reclaim_s``: for each ``kill -9`` (made while the process holds jobs: the drill waits up to 10 s for
  it to hold some, then freezes it with SIGSTOP, reads what it holds, and kills it with SIGKILL), the jobs
  running under the killed process (the pid in ``locked_by``) are noted; polled every 0.25 s until each is
  gone (finished or cancelled by another worker), running under another process, or dead-lettered. The worst
  over the three kills; a kill whose jobs were not all moved on when the counting starts counts as its elapsed
  time (a lower bound, said in the notes; ``faults_reclaim_unfinished``: how many jobs were still held).
- ``faults_db_restart_5xx``: 5xx answers the load generator got (ingest and seats) from 1 s before the restart
  began to 10 s after it ended; ``faults_db_restart_5xx_without_retry_after``: those that were not a 503 with
  ``Retry-After``. Cut connections in the same window are printed beside it.
- ``faults_load_warnings_per_s`` (acknowledged within the load, per second of it), ``faults_load_calls``
  (created in the Twilio sandbox), ``faults_load_alerts`` (sent in the Telegram sandbox), ``faults_load_claims``
  (seat claims): the load actually achieved.

Nothing is asserted. The load actually achieved, and per-drill details (5xx and cut connections while each
drill was the latest, restart-to-ready times and failed starts of a killed replica, and what the sandboxes saw
meanwhile: calls, application errors heard, failed status callbacks, 429s, 403s, failed webhook deliveries) are
printed. ``SHOUHU_BENCH_KEEP_LOGS=1`` keeps the services' logs and prints where. Every process started
here is stopped, and the private PostgreSQL stopped and deleted, even when the run fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import yaml

from bench.cluster import (
    TG,
    TW,
    BenchDb,
    ClusterError,
    PrivatePostgres,
    Proc,
    ReplicaSet,
    bind_chats,
    load_average_note,
    make_keys,
    migrated,
)
from bench.ingest import CST, _Http, _Report, _verbatim, machine_idle_note

RATE_PER_S = 50.0
INGEST_CLIENTS = 48  # enough in flight that a slow answer (a drill) does not hold the pace back
SEATS = 8
REGIONS = ("330106", "330102", "330108", "330203")  # all under unit 33, the seats' unit
FRAUD_TYPES = ("task_brushing", "fake_investment", "fake_customer_service", "fake_loan")  # no rule lifts these
PHONE_TIME_SCALE = 0.05
TWILIO_CALLS_PER_S = 20
CALLCENTER_CALLS_PER_S = 10
RESTART_AFTER_S = 4.0
# The callcenter's idea of how long a call can last, in the sandbox's phone time (20x faster): its longest script
# (150 phone s) takes 7.5 s here, and its transfers ring seats for 5 s at least (the setting's floor). Without
# this, reconciliation would wait 4.5 minutes of wall time for calls that end in seconds. The sweep runs every
# 10 s instead of 30; the ring timeout (30 s) and the margin for callbacks on their way (30 s) stay as they are.
PHONE_TIME_SETTINGS = {"SHOUHU_CALL_LONGEST_SCRIPT_S": "8", "SHOUHU_TRANSFER_RING_S": "5",
                       "SHOUHU_RECONCILE_INTERVAL_S": "10"}
MAX_STARTS = 10  # starts of a killed replica before the drill gives up on it
DB_WINDOW_BEFORE_S, DB_WINDOW_AFTER_S = 1.0, 10.0

@dataclass(frozen=True)
class _Plan:
    load_s: float
    settle_s: float
    drills: tuple[tuple[float, str], ...]  # (seconds after the load starts, drill)

    @classmethod
    def of(cls, quick: bool) -> _Plan:
        names = ("kill dispatcher", "kill bot", "kill callcenter", "restart postgres", "telegram storm",
                 "twilio 429", "twilio 5xx")
        offsets = (6, 13, 20, 28, 38, 44, 51) if quick else (15, 35, 55, 80, 100, 118, 130)
        return cls(load_s=60 if quick else 150, settle_s=60 if quick else 90, drills=tuple(zip(offsets, names, strict=True)))


class FaultsBenchError(ClusterError):
    """The drills could not run as designed (a process did not start, the database did not come back)."""


# ---- what the load generator saw -----------------------------------------------------------------------------


@dataclass
class _Seen:
    t0: float = 0.0  # perf_counter at the load's start
    acked: dict[str, float] = field(default_factory=dict)  # source_ref -> when acknowledged
    sent: int = 0
    given_up: list[str] = field(default_factory=list)
    backlog_at_stop: int = 0  # warnings due by the pace but not yet sent when the load stopped
    errors_5xx: list[tuple[float, str, int]] = field(default_factory=list)  # (t, what, status)
    errors_5xx_bare: list[tuple[float, str, int]] = field(default_factory=list)  # all but 503 with Retry-After
    cut: list[tuple[float, str]] = field(default_factory=list)  # connections refused or cut
    other: Counter[str] = field(default_factory=Counter)
    first_5xx: dict[str, str] = field(default_factory=dict)
    presses: int = 0
    claims: int = 0
    dispositions: int = 0
    empty_claims: int = 0
    drills: list[dict[str, Any]] = field(default_factory=list)
    stopping: bool = False

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def answer(self, what: str, status: int, data: bytes, head: bytes = b"") -> None:
        if status >= 500:
            self.errors_5xx.append((self.now(), what, status))
            if not (status == 503 and b"\r\nretry-after:" in head.lower()):
                self.errors_5xx_bare.append((self.now(), what, status))
            self.first_5xx.setdefault(f"{what} {status}", _verbatim(status, data)[:300])
        elif status >= 400:
            self.other[f"{what} {status}"] += 1


def _warning(n: int, tag: str, phone: str, signal: str) -> dict[str, Any]:
    occurred = (datetime.now(UTC) - timedelta(seconds=30)).astimezone(CST).replace(microsecond=0)
    return {"source": "drill", "source_ref": f"drill-{tag}-{n}", "phone": phone,
            "fraud_type": FRAUD_TYPES[n % len(FRAUD_TYPES)], "signal": signal,
            "region_code": REGIONS[n % len(REGIONS)], "occurred_at": occurred.isoformat()}


def _phone(n: int) -> str:
    return f"+86139{n:08d}"


def _has_chat(n: int) -> bool:
    return n % 5 in (0, 1)  # 40%


async def _ingest(ports: list[int], key: str, sandbox_port: int, seen: _Seen, tag: str, plan: _Plan) -> None:
    """50 warnings/s, paced from the start (a lagging sender catches up), each retried until acknowledged."""
    rng = random.Random(7)
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    async def client(i: int) -> None:
        https = [_Http(p, key) for p in ports]
        control = _Http(sandbox_port)
        try:
            while (n := await queue.get()) is not None:
                if seen.stopping:
                    seen.backlog_at_stop += 1  # not sent: the load is over (retries of sent ones go on)
                    continue
                roll = rng.random()
                signal_ = ("transfer_in_progress" if roll < 0.1 else "fraud_call_received" if roll < 0.5
                           else "fraud_sms_received")
                phone = _phone(n)
                if signal_ == "transfer_in_progress":
                    pick = rng.random()
                    script = ({"behaviour": "answer", "digits": ["1"], "ring_s": 2} if pick < 0.4
                              else {"behaviour": "busy"} if pick < 0.6 else None)
                    if script is not None:
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(control.request("PUT", f"{TW}/numbers/{phone}",
                                                                   orjson.dumps(script)), 10)
                body = orjson.dumps(_warning(n, tag, phone, signal_))
                ref = f"drill-{tag}-{n}"
                seen.sent += 1
                deadline = time.perf_counter() + 60
                replica = n % len(https)
                while time.perf_counter() < deadline:
                    http = https[replica]
                    try:
                        status, data = await asyncio.wait_for(http.request("POST", "/v1/warnings", body), 20)
                    except (OSError, asyncio.IncompleteReadError, TimeoutError):
                        http.close()
                        seen.cut.append((seen.now(), "ingest"))
                        status, data = 0, b""
                    if status in (200, 201):
                        seen.acked[ref] = seen.now()
                        break
                    if status:
                        seen.answer("ingest", status, data, http.last_head)
                    if 400 <= status < 500:
                        break  # retrying cannot change it
                    replica = (replica + 1) % len(https)
                    await asyncio.sleep(0.5)
                else:
                    seen.given_up.append(ref)
        finally:
            for http in [*https, control]:
                http.close()

    clients = [asyncio.create_task(client(i)) for i in range(INGEST_CLIENTS)]
    try:
        n = 0
        while not seen.stopping:
            due = int(seen.now() * RATE_PER_S)
            while n < due:
                queue.put_nowait(n)
                n += 1
            await asyncio.sleep(0.02)
    finally:
        for _ in clients:
            queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*clients, return_exceptions=True), 90)
        for task in clients:
            task.cancel()


async def _citizens(sandbox_port: int, seen: _Seen) -> None:
    """Every second: read the chat list; for new bot messages with feedback buttons, press the first (60%)."""
    rng = random.Random(11)
    http = _Http(sandbox_port)
    last_id: dict[int, int] = defaultdict(int)
    counts: dict[int, int] = {}
    try:
        while not seen.stopping:
            await asyncio.sleep(1.0)
            try:
                status, data = await asyncio.wait_for(http.request("GET", f"{TG}/chats"), 10)
                if status != 200:
                    continue
                for chat in orjson.loads(data)["chats"]:
                    cid, from_bot = chat["chat_id"], chat["from_bot"]
                    if from_bot <= counts.get(cid, 0) or chat["blocked"]:
                        continue
                    counts[cid] = from_bot
                    status, data = await asyncio.wait_for(
                        http.request("GET", f"{TG}/chats/{cid}/messages?from=bot&after={last_id[cid]}"), 10)
                    if status != 200:
                        continue
                    for message in orjson.loads(data)["messages"]:
                        last_id[cid] = max(last_id[cid], message["message_id"])
                        buttons = [b for row in (message.get("reply_markup") or {}).get("inline_keyboard", [])
                                   for b in row if str(b.get("callback_data", "")).startswith("fb:")]
                        if buttons and rng.random() < 0.6:
                            body = orjson.dumps({"message_id": message["message_id"],
                                                 "data": buttons[0]["callback_data"]})
                            status, _ = await asyncio.wait_for(
                                http.request("POST", f"{TG}/chats/{cid}/press", body), 10)
                            seen.presses += status == 200
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                http.close()
    finally:
        http.close()


async def _seat(i: int, ports: list[int], key: str, seen: _Seen) -> None:
    """An operator: seat available, then claim, talk 0.3 s, disposition; 1 s pause when nothing waits."""
    rng = random.Random(100 + i)
    https = [_Http(p, key) for p in ports]
    replica = i % len(ports)
    available = False

    async def call(method: str, path: str, body: Any, what: str) -> tuple[int, bytes]:
        nonlocal replica
        http = https[replica]
        try:
            status, data = await asyncio.wait_for(http.request(method, path, orjson.dumps(body) if body else b""), 20)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            http.close()
            seen.cut.append((seen.now(), what))
            replica = (replica + 1) % len(https)
            return 0, b""
        seen.answer(what, status, data, http.last_head)
        if status >= 500:
            replica = (replica + 1) % len(https)
        return status, data

    try:
        while not seen.stopping:
            if not available:
                status, _ = await call("PUT", "/v1/seat", {"state": "available"}, "seat")
                available = status == 200
                if not available:
                    await asyncio.sleep(0.5)
                continue
            status, data = await call("POST", "/v1/queue/next", None, "claim")
            if status == 200:
                seen.claims += 1
                task_id = orjson.loads(data)["task_id"]
                await asyncio.sleep(0.3)
                for _ in range(20):  # the claim is ours: keep at it through a crash or a restart
                    status, data = await call("POST", f"/v1/tasks/{task_id}/disposition",
                                              {"disposition": rng.choice(("dissuaded", "unreachable"))}, "disposition")
                    if status == 202:
                        seen.dispositions += 1
                    if status and status < 500:
                        break
                    await asyncio.sleep(0.5)
            elif status == 204:
                seen.empty_claims += 1
                await asyncio.sleep(1.0)
            elif status == 409:
                available = False
            else:
                await asyncio.sleep(0.5)
    finally:
        for http in https:
            http.close()


@dataclass
class _CallLog:
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)  # sid -> {to, url, created_at}
    since: float = 0.0


async def _read_call_log(http: _Http, log: _CallLog) -> None:
    status, data = await asyncio.wait_for(http.request("GET", f"{TW}/calls?since={log.since - 1:.3f}"), 30)
    if status != 200:
        return
    for call in orjson.loads(data)["calls"]:
        if call["direction"] != "outbound-api":
            continue
        log.calls[call["sid"]] = {"to": call["to"], "url": call["url"], "created_at": call["created_at"]}
        log.since = max(log.since, call["created_at"])


async def _call_logger(sandbox_port: int, log: _CallLog, seen: _Seen, stop: asyncio.Event) -> None:
    http = _Http(sandbox_port)
    try:
        while not stop.is_set():
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
                await _read_call_log(http, log)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
        await _read_call_log(http, log)
    finally:
        http.close()


# ---- drills ----------------------------------------------------------------------------------------------------


async def _held_jobs(db: BenchDb, pid: int) -> list[int]:
    rows = await db.fetch("SELECT id FROM jobs WHERE status = 'running' AND locked_by LIKE $1", f"%:{pid}:%")
    return [r["id"] for r in rows]


async def _track_reclaim(db: BenchDb, pid: int, job_ids: list[int], drill: dict[str, Any], killed_at: float,
                         seen: _Seen) -> None:
    """Until every job the killed process held is gone, running under another process, or dead-lettered."""
    pending = set(job_ids)
    drill["held_jobs"] = len(job_ids)
    moved: dict[str, int] = Counter()
    while pending:
        rows = {r["id"]: r for r in await db.fetch(
            "SELECT id, status, locked_by FROM jobs WHERE id = ANY($1::bigint[])", list(pending))}
        for job_id in list(pending):
            row = rows.get(job_id)
            how = ("gone" if row is None else "dead-lettered" if row["status"] == "failed"
                   else "running elsewhere" if row["status"] == "running" and f":{pid}:" not in (row["locked_by"] or "")
                   else None)
            if how:
                pending.discard(job_id)
                moved[how] += 1
        drill["reclaim_pending"] = len(pending)
        drill["reclaim_moved"] = dict(moved)
        drill["reclaim_s"] = round(seen.now() - killed_at, 2)
        if pending:
            await asyncio.sleep(0.25)
    drill["reclaim_done"] = True


async def _kill(proc: Proc, db: BenchDb, seen: _Seen, drill: dict[str, Any], trackers: list[asyncio.Task[None]]) -> None:
    """kill -9 while the process holds jobs (waiting up to 10 s for it to hold some); restarted 4 s later."""
    pid = proc.pid
    t0 = time.perf_counter()
    while not await _held_jobs(db, pid) and time.perf_counter() - t0 < 10:
        await asyncio.sleep(0.05)
    # Frozen first, so what it holds cannot change between reading it and the kill; then killed (no clean-up runs).
    os.kill(pid, signal.SIGSTOP)
    await asyncio.sleep(0.2)  # a COMMIT it sent just before is still finishing in the server
    held = await _held_jobs(db, pid)
    proc.kill9()
    killed_at = seen.now()
    drill.update(pid=pid, killed_at_s=round(killed_at, 2), reclaim_done=False, reclaim_s=0.0)
    trackers.append(asyncio.create_task(_track_reclaim(db, pid, held, drill, killed_at, seen)))

    async def restart() -> None:
        # As a supervisor does (compose's restart: unless-stopped): start it again until it stays up.
        await asyncio.sleep(RESTART_AFTER_S)
        failed: list[str] = drill.setdefault("failed_starts", [])
        for _ in range(MAX_STARTS):
            proc.spawn()
            try:
                drill["ready_after_restart_s"] = round(await proc.wait_ready(), 2)
                break
            except ClusterError:
                failed.append(_short_error(proc.log_tail(60)))
                proc.stop()
                await asyncio.sleep(2.0)
        else:
            drill["never_came_back"] = True
        drill["down_s"] = round(seen.now() - killed_at, 2)

    trackers.append(asyncio.create_task(restart()))  # the next drill does not wait for it


async def _drills(plan: _Plan, procs: dict[str, list[Proc]], pg: PrivatePostgres, db: BenchDb, sandbox_port: int,
                  chat_ids: list[int], seen: _Seen, trackers: list[asyncio.Task[None]]) -> None:
    control = _Http(sandbox_port)
    rng = random.Random(5)
    try:
        for at, name in plan.drills:
            await asyncio.sleep(max(0.0, at - seen.now()))
            drill: dict[str, Any] = {"drill": name, "at_s": round(seen.now(), 2),
                                     "sandbox_before": await _sandbox_counters(control)}
            seen.drills.append(drill)
            if name.startswith("kill "):
                await _kill(procs[name.split()[1]][0], db, seen, drill, trackers)
            elif name == "restart postgres":
                drill["restart_s"] = round(await asyncio.to_thread(pg.restart), 2)
                drill["ended_at_s"] = round(seen.now(), 2)
            elif name == "telegram storm":
                wave = rng.sample(chat_ids, max(1, len(chat_ids) // 20))
                body = {"storm_s": 10, "retry_after_s": 3, "block_chat_ids": wave}
                status, data = await control.request("POST", f"{TG}/faults", orjson.dumps(body))
                if status != 200:
                    raise FaultsBenchError(f"the Telegram sandbox refused the faults: {_verbatim(status, data)}")
                drill.update(storm_s=10, retry_after_s=3, blocked_chats=len(wave))
            elif name == "twilio 429":
                await _twilio_burst(control, 429, 6)
                drill.update(status=429, window_s=6)
            elif name == "twilio 5xx":
                await _twilio_burst(control, 500, 3)
                await asyncio.sleep(3)
                await _twilio_burst(control, 503, 3)
                drill.update(status="500 for 3 s, then 503 for 3 s")
    finally:
        control.close()


def _short_error(text: str) -> str:
    """The gist of the last exception logged in `text`: its `module.Name: message`."""
    import re

    found = re.findall(r"((?:[a-z_]+\.)*[A-Z]\w*(?:Error|Exception|RetryAfter)\w*: [^\\\"]{0,160})", text)
    if found:
        return found[-1]
    return text.strip().splitlines()[-1][-200:] if text.strip() else "no output"


# What the sandboxes saw the services do, counted per drill (differences between drills' starts).
SANDBOX_COUNTERS = {"twilio": ("created", "application_errors", "status_callbacks_failed", "twiml_fetches"),
                    "telegram": ("sent", "rejected_429", "blocked_403", "webhook_failed_attempts", "webhook_dropped")}


async def _sandbox_counters(control: _Http) -> dict[str, int]:
    found: dict[str, int] = {}
    for name, path in (("twilio", f"{TW}/stats"), ("telegram", f"{TG}/stats")):
        status, data = await control.request("GET", path)
        if status == 200:
            stats = orjson.loads(data)
            found |= {f"{name} {k}": int(stats.get(k) or 0) for k in SANDBOX_COUNTERS[name]}
    return found


async def _twilio_burst(control: _Http, status: int, window_s: float) -> None:
    code, data = await control.request("POST", f"{TW}/faults", orjson.dumps({"status": status, "window_s": window_s}))
    if code != 200:
        raise FaultsBenchError(f"the Twilio sandbox refused the burst: {_verbatim(code, data)}")


# ---- set-up ----------------------------------------------------------------------------------------------------


def _drill_policy(directory: Path) -> Path:
    """The built-in policy, with the high tier's operator call after 15 s and its call retries after 15 s."""
    import services.dispatcher.policy as policy_pkg

    policy = yaml.safe_load((Path(policy_pkg.__file__).parent / "default_policy.yaml").read_text())
    policy["name"] = "crash drills"
    high = policy["playbooks"]["high"]
    for channel in high["channels"]:
        if channel["channel"] == "operator_call":
            channel["after_minutes"] = 0.25
    high["auto_call"]["retry_after_minutes"] = {k: 0.25 for k in high["auto_call"]["retry_after_minutes"]}
    path = directory / "drill-policy.yaml"
    path.write_text(yaml.safe_dump(policy, allow_unicode=True))
    if os.geteuid() == 0:
        shutil.chown(path, "postgres")  # not needed by PostgreSQL; the services run as us. Harmless.
    return path


async def _make_keys(url: str, audit_key: str) -> tuple[str, list[str]]:
    ingest, *operators = await make_keys(url, audit_key, [("ingest", "", "drill-ingest"),
                                                          *(("operator", "33", f"drill-seat-{i}") for i in range(SEATS))])
    return ingest, operators


async def _make_chats(sandbox_port: int, db: BenchDb, count: int) -> tuple[list[int], list[str]]:
    """Chats for the phones that have one (40%), created in the sandbox and bound as the bot binds them."""
    numbers = [n for n in range(count) if _has_chat(n)]
    chat_ids: list[int] = [0] * len(numbers)
    todo = list(range(len(numbers)))

    async def worker() -> None:
        http = _Http(sandbox_port)
        try:
            while todo:
                i = todo.pop()
                status, data = await http.request("POST", f"{TG}/chats",
                                                  orjson.dumps({"phone": _phone(numbers[i]), "first_name": f"市民{i}"}))
                if status != 200:
                    raise FaultsBenchError(f"the sandbox refused a chat: {_verbatim(status, data)}")
                chat_ids[i] = int(orjson.loads(data)["chat_id"])
        finally:
            http.close()

    await asyncio.gather(*(worker() for _ in range(8)))
    phones = [_phone(n) for n in numbers]
    await bind_chats(db, chat_ids, phones)
    return chat_ids, phones


# ---- counting ----------------------------------------------------------------------------------------------------


async def _settle(db: BenchDb, plan: _Plan, final_states: tuple[str, ...]) -> tuple[float, dict[str, int]]:
    """Until nothing is in flight (bounded): no call attempt unfinished, no job running or due on the workers."""
    t0 = time.perf_counter()
    left: dict[str, int] = {}
    while time.perf_counter() - t0 < plan.settle_s:
        [row] = await db.fetch(
            "SELECT (SELECT count(*) FROM call_attempts WHERE status <> ALL($1::text[])) AS calls,"
            " (SELECT count(*) FROM jobs WHERE status = 'running' AND scope IS NULL) AS running,"
            " (SELECT count(*) FROM jobs WHERE status = 'queued' AND scope IS NULL AND run_at <= now()) AS due",
            list(final_states))
        left = dict(row)
        if not any(left.values()):
            break
        await asyncio.sleep(1.0)
    return time.perf_counter() - t0, left


async def _count(db: BenchDb, seen: _Seen, calls: _CallLog, sandbox_port: int, chat_ids: list[int],
                 final_states: tuple[str, ...]) -> tuple[dict[str, float], list[str]]:
    notes: list[str] = []
    refs = list(seen.acked)
    stored = {r["source_ref"] for r in await db.fetch(
        "SELECT source_ref FROM warnings WHERE source = 'drill' AND source_ref = ANY($1::text[])", refs)}
    lost = [r for r in refs if r not in stored]
    if lost:
        notes.append(f"acknowledged but not stored (first 5): {lost[:5]}")

    [tasks] = await db.fetch(
        "SELECT count(*) FILTER (WHERE t.status <> 'closed') AS open,"
        " count(*) FILTER (WHERE t.status <> 'closed' AND NOT EXISTS (SELECT 1 FROM jobs j"
        "   WHERE j.status IN ('queued', 'running') AND (j.task_id = t.id OR j.payload->>'task_id' = t.id::text)))"
        "   AS without_jobs,"
        " count(*) FILTER (WHERE t.status <> 'closed' AND EXISTS (SELECT 1 FROM jobs j"
        "   WHERE j.task_id = t.id AND j.status = 'failed')) AS with_dead_letters,"
        " count(*) FILTER (WHERE t.status <> 'closed' AND NOT EXISTS (SELECT 1 FROM jobs j"
        "   WHERE j.status IN ('queued', 'running') AND j.scope IS NULL"
        "   AND (j.task_id = t.id OR j.payload->>'task_id' = t.id::text))) AS waiting_on_people_only,"
        " count(*) AS total FROM tasks t")
    [attempts] = await db.fetch(
        "SELECT count(*) AS total, count(*) FILTER (WHERE status <> ALL($1::text[])) AS unfinished,"
        " count(*) FILTER (WHERE status = 'uncertain') AS uncertain,"
        " count(*) FILTER (WHERE status = ANY($1::text[]) AND outcome IS NULL AND channel = 'auto_call')"
        "   AS final_without_outcome FROM call_attempts", list(final_states))
    unfinished = await db.fetch("SELECT status, count(*) AS n FROM call_attempts WHERE status <> ALL($1::text[])"
                                " GROUP BY status ORDER BY n DESC", list(final_states))
    dead = await db.fetch("SELECT kind, count(*) AS n, min(last_error) AS error FROM jobs WHERE status = 'failed'"
                          " GROUP BY kind")

    per_attempt = Counter(parse_qs(urlsplit(c["url"] or "").query).get("attempt", ["?"])[0]
                          for c in calls.calls.values())
    double_calls = sum(n - 1 for n in per_attempt.values() if n > 1)

    # Alerts: every chat's conversation in the sandbox, alert messages per (chat, task).
    alerts: Counter[tuple[int, str]] = Counter()
    http = _Http(sandbox_port)
    try:
        for cid in chat_ids:
            status, data = await http.request("GET", f"{TG}/chats/{cid}/messages?from=bot")
            if status != 200:
                continue
            for message in orjson.loads(data)["messages"]:
                tasks_named = {str(b.get("callback_data", "")).rsplit(":", 1)[-1]
                               for row in (message.get("reply_markup") or {}).get("inline_keyboard", [])
                               for b in row if str(b.get("callback_data", "")).startswith("fb:")}
                for task in tasks_named:
                    alerts[(cid, task)] += 1
    finally:
        http.close()
    made = {str(r["id"]): r["n"] for r in await db.fetch(
        "SELECT id, COALESCE((attempts->>'bot_alert')::int, 0) AS n FROM tasks WHERE id = ANY($1::uuid[])",
        list({uuid.UUID(t) for _, t in alerts}))} if alerts else {}
    double_alerts = sum(max(0, n - max(made.get(task, 1), 1)) for (_, task), n in alerts.items())
    doubled = [(cid, task) for (cid, task), n in alerts.items() if n > max(made.get(task, 1), 1)]
    for cid, task in doubled[:3]:  # what the bot recorded for them, to see why
        rows = await db.fetch("SELECT attempt, status, error, created_at, sent_at FROM bot_deliveries"
                              " WHERE task_id = $1 AND chat_id = $2 ORDER BY attempt", uuid.UUID(task), cid)
        notes.append(f"alerted {alerts[(cid, task)]}x: chat {cid}, task {task}; bot_deliveries:"
                     f" {[dict(r) for r in rows]}")

    figures = {
        "faults_warnings_lost": float(len(lost)),
        "faults_tasks_without_jobs": float(tasks["without_jobs"]),
        "faults_outcomes_lost": float(attempts["unfinished"]),
        "faults_double_calls": float(double_calls),
        "faults_double_alerts": float(double_alerts),
    }
    notes.append(f"tasks: {tasks['total']} in all, {tasks['open']} open; without a live job"
                 f" {tasks['without_jobs']}; with a dead letter {tasks['with_dead_letters']}; open tasks whose only"
                 f" live jobs are seat-claimable operator calls {tasks['waiting_on_people_only'] - tasks['without_jobs']}")
    unfinished_text = ", ".join(f"{r['status']} {r['n']}" for r in unfinished) or "none"
    notes.append(f"call attempts: {attempts['total']}; not final after settling {attempts['unfinished']}"
                 f" ({unfinished_text}); uncertain"
                 f" {attempts['uncertain']}; automated, final, no outcome reported {attempts['final_without_outcome']}")
    notes.append(f"Twilio sandbox log: {len(calls.calls)} calls for {len(per_attempt)} attempts"
                 f" ({double_calls} beyond one per attempt)")
    notes.append(f"Telegram sandbox: {sum(alerts.values())} alert messages for {len(alerts)} (chat, task) pairs"
                 f" ({double_alerts} beyond the dispatcher's bot_alert attempts)")
    for r in dead:
        notes.append(f"dead letters: {r['kind']} x{r['n']}: {(r['error'] or '')[:200]}")
    return figures, notes


# ---- the benchmark ---------------------------------------------------------------------------------------------


async def bench_faults(quick: bool) -> dict[str, float]:
    """Crash drills with load running: what is lost, how long recovery takes, what errors the clients see."""
    from services.callcenter.calls.models import FINAL_STATES

    plan = _Plan.of(quick)
    report = _Report()
    report.notes.append(await machine_idle_note())
    report.notes.append(load_average_note("at the start"))
    final_states = tuple(FINAL_STATES)
    pg = PrivatePostgres()
    cluster: ReplicaSet | None = None
    db = BenchDb(pg.url)
    seen = _Seen()
    trackers: list[asyncio.Task[None]] = []
    load: list[asyncio.Task[Any]] = []
    failed = True
    try:
        t_setup = time.perf_counter()
        await asyncio.to_thread(pg.start)
        audit_key, service_password = await migrated(pg)
        ingest_key, operator_keys = await _make_keys(pg.url, audit_key)
        policy_path = _drill_policy(pg.dir)
        cluster = ReplicaSet(pg, audit_key=audit_key, service_password=service_password, env={
            "SHOUHU_DB_POOL_SIZE": "5", "SHOUHU_POLICY": str(policy_path),
            "SHOUHU_CALLS_PER_S": str(CALLCENTER_CALLS_PER_S), **PHONE_TIME_SETTINGS,
            # No rest after a disposition (the callcenter's seat wrap-up, where it has one): the seats' load
            # claims again at once, as it always has.
            "SHOUHU_SEAT_WRAP_UP_S": "0"})
        procs = cluster.procs
        sandbox_port = cluster.sandbox_port
        proxy, bot_proxy = cluster.callcenter_proxy, cluster.bot_proxy
        await cluster.start_sandbox([(f"{TW}/settings", {"time_scale": PHONE_TIME_SCALE, "default_behaviour": "answer"}),
                                     (f"{TW}/limits", {"calls_per_s": TWILIO_CALLS_PER_S}),
                                     (f"{TG}/limits", {"global_per_s": 30, "per_chat_per_s": 1})])
        warnings_planned = int(RATE_PER_S * plan.load_s * 1.05) + 100
        chat_ids, _ = await _make_chats(sandbox_port, db, warnings_planned)
        await cluster.start_services()
        report.notes.append(f"set-up {time.perf_counter() - t_setup:.1f} s: private PostgreSQL :{pg.port} ({pg.dir}),"
                            f" {cluster.describe()}; {len(chat_ids)} chats bound")

        # -- load and drills --
        tag = secrets.token_hex(3)
        calls = _CallLog()
        stop_log = asyncio.Event()
        seen.t0 = time.perf_counter()
        dispatcher_ports = [p.port for p in procs["dispatcher"]]
        callcenter_ports = [p.port for p in procs["callcenter"]]
        load = [asyncio.create_task(_ingest(dispatcher_ports, ingest_key, sandbox_port, seen, tag, plan)),
                asyncio.create_task(_citizens(sandbox_port, seen)),
                asyncio.create_task(_call_logger(sandbox_port, calls, seen, stop_log)),
                *(asyncio.create_task(_seat(i, callcenter_ports, key, seen)) for i, key in enumerate(operator_keys))]
        drills = asyncio.create_task(_drills(plan, procs, pg, db, sandbox_port, chat_ids, seen, trackers))
        # The load runs its planned time, and at least 10 s past the last drill's start (a drill may start late).
        while not drills.done() or seen.now() < max(plan.load_s, seen.drills[-1]["at_s"] + 10):
            for task in [*load, drills, *trackers]:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            await asyncio.sleep(0.5)
        seen.stopping = True
        load_s = seen.now()
        await asyncio.wait_for(asyncio.gather(*load[:2], *load[3:]), 120)
        report.notes.append(f"load stopped at {load_s:.0f} s; the last acknowledgement at"
                            f" {max(seen.acked.values(), default=0):.0f} s")

        # -- settle and count --
        settle_s, left = await _settle(db, plan, final_states)
        report.notes.append(f"settled for {settle_s:.0f} s (bound {plan.settle_s:.0f} s); still in flight then:"
                            f" {left}")
        stop_log.set()
        await asyncio.wait_for(load[2], 60)
        for task in trackers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # a replica that did not come back
            task.cancel()
        await asyncio.gather(*trackers, return_exceptions=True)
        figures, count_notes = await _count(db, seen, calls, sandbox_port, chat_ids, final_states)

        kills = [d for d in seen.drills if d["drill"].startswith("kill ")]
        figures["faults_reclaim_s"] = max((d.get("reclaim_s", 0.0) for d in kills if d.get("held_jobs")), default=0.0)
        figures["faults_reclaim_unfinished"] = float(sum(d.get("reclaim_pending", 0) for d in kills))
        restart = next(d for d in seen.drills if d["drill"] == "restart postgres")
        lo, hi = restart["at_s"] - DB_WINDOW_BEFORE_S, restart["ended_at_s"] + DB_WINDOW_AFTER_S
        figures["faults_db_restart_5xx"] = float(sum(1 for t, _, _ in seen.errors_5xx if lo <= t <= hi))
        # Of those, the ones that were not "503 with Retry-After" (what the issue asks for while the database is away).
        figures["faults_db_restart_5xx_without_retry_after"] = float(
            sum(1 for t, _, _ in seen.errors_5xx_bare if lo <= t <= hi))
        restart_cut = sum(1 for t, _ in seen.cut if lo <= t <= hi)

        control = _Http(sandbox_port)
        try:
            tg_stats = orjson.loads((await control.request("GET", f"{TG}/stats"))[1])
            tg_faults = orjson.loads((await control.request("GET", f"{TG}/faults"))[1])
            tw_stats = orjson.loads((await control.request("GET", f"{TW}/stats"))[1])
            tw_faults = orjson.loads((await control.request("GET", f"{TW}/faults"))[1])
        finally:
            control.close()
        figures.update({
            # Acknowledged by the time the load stopped, per second of load (late acks of retries not counted).
            "faults_load_warnings_per_s": round(sum(1 for t in seen.acked.values() if t <= load_s)
                                                / max(load_s, 1e-9), 1),
            "faults_load_calls": float(tw_stats["created"]),
            "faults_load_alerts": float(tg_stats["sent"]),
            "faults_load_claims": float(seen.claims),
        })

        # -- the report --
        report.notes.append(
            f"load achieved: {len(seen.acked)} warnings acknowledged of {seen.sent} sent"
            f" ({figures['faults_load_warnings_per_s']}/s over {load_s:.0f} s; {len(seen.given_up)} given up after"
            f" 60 s of retries; {seen.backlog_at_stop} due by the pace but not sent when the load stopped, the"
            f" clients being busy with earlier ones); calls created {tw_stats['created']} (sandbox 429s {tw_stats['rejected_429']},"
            f" application errors heard {tw_stats['application_errors']}, status callbacks failed"
            f" {tw_stats['status_callbacks_failed']}); alerts sent {tg_stats['sent']} (429 {tg_stats['rejected_429']},"
            f" 403 {tg_stats['blocked_403']}); buttons pressed {seen.presses}; seat claims {seen.claims},"
            f" dispositions {seen.dispositions}, empty claims {seen.empty_claims}")
        report.notes.append(f"sandbox faults: Telegram {tg_faults}; Twilio {tw_faults}; proxies failed over"
                            f" {proxy.refused} callcenter and {bot_proxy.refused} bot connections; webhook"
                            f" deliveries {tg_stats['webhook_delivered']}, failed attempts"
                            f" {tg_stats['webhook_failed_attempts']}, dropped {tg_stats['webhook_dropped']}")
        bounds = [d["at_s"] for d in seen.drills] + [load_s + settle_s + 1]
        control = _Http(sandbox_port)
        try:
            counters = [d["sandbox_before"] for d in seen.drills] + [await _sandbox_counters(control)]
        finally:
            control.close()
        for i, (d, end) in enumerate(zip(seen.drills, bounds[1:], strict=True)):
            e5 = Counter(f"{what} {status}" for t, what, status in seen.errors_5xx if d["at_s"] <= t < end)
            cut = Counter(what for t, what in seen.cut if d["at_s"] <= t < end)
            sandbox_delta = {k: v - counters[i].get(k, 0) for k, v in counters[i + 1].items()
                             if v - counters[i].get(k, 0)}
            details = {k: v for k, v in d.items() if k not in ("drill", "at_s", "sandbox_before")}
            report.notes.append(f"drill {d['drill']} at {d['at_s']:.1f} s: {details}; until the next drill (or the"
                                f" count): 5xx {dict(e5) or 0}, cut connections {dict(cut) or 0}, the sandbox saw"
                                f" {sandbox_delta}")
        first = seen.drills[0]["sandbox_before"] if seen.drills else {}
        report.notes.append(f"the sandbox before the first drill: {first}")
        before = Counter(f"{w} {s}" for t, w, s in seen.errors_5xx if t < (seen.drills[0]["at_s"] if seen.drills else 0))
        report.notes.append(f"5xx before the first drill: {dict(before) or 0}; around the restart"
                            f" [{lo:.1f}, {hi:.1f}] s: {figures['faults_db_restart_5xx']:.0f} 5xx, {restart_cut}"
                            f" cut connections; 4xx seen: {dict(seen.other) or 0}")
        for key, text in list(seen.first_5xx.items())[:6]:
            report.notes.append(f"first {key}: {text}")
        if any(d.get("held_jobs") and not d.get("reclaim_done") for d in kills):
            report.notes.append("faults_reclaim_s is a lower bound: some killed process's jobs had not moved on"
                                " when counting began (faults_reclaim_unfinished of them)")
        if not any(d.get("held_jobs") for d in kills):
            report.notes.append("no killed process held a job at the moment of its kill: faults_reclaim_s is 0 by"
                                " default, not measured")
        report.notes.extend(count_notes)
        report.notes.extend(cluster.error_notes())
        report.notes.append(load_average_note("at the end"))
        report.rows.append(("faults (one run)", 1, 0.0, 0.0, 0.0, "see the notes and the JSON figures"))
        failed = False
        return figures
    finally:
        seen.stopping = True
        for task in [*load, *trackers]:
            task.cancel()
        await asyncio.gather(*load, *trackers, return_exceptions=True)
        await db.close()
        if cluster is not None:
            await cluster.close(failed=failed, pg=pg)
        await asyncio.to_thread(pg.stop)
        report.print()
