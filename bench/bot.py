"""`shouhu bench bot`: how fast alerts fan out to Telegram within its limits, and how soon one alert arrives.

What is measured, in one run, against real processes: the Telegram sandbox
(``shouhu sandbox``), one dispatcher (``shouhu serve dispatcher``) and one bot
(``shouhu serve bot``), each a subprocess on its own free port on 127.0.0.1,
on a fresh, migrated database on the configured PostgreSQL server (created and
dropped as ``shouhu bench ingest`` does). The bot runs without
TELEGRAM_BOT_TOKEN (so it uses its sandbox token) with TELEGRAM_API_BASE
pointing at the sandbox, its default limits (30 messages/s overall, 1 per chat
per second) and its alert worker and long polling on. The sandbox is set to
enforce Telegram's limits, 30 messages/s per bot and 1 per chat per second
(POST /sandbox/telegram/limits), and refuses anything over them with a 429.

Binding. N citizens (10,000; 600 with --quick), plus a few more kept aside for
(2). Binding each one through the real bot dialogue (/start, share contact)
would take hours at the bot's 1-message-per-second replies, and binding is not
what is measured here: the fan-out is. So each citizen's chat is created
through the sandbox's control API (POST /sandbox/telegram/chats) and its
binding is written straight into the database, as the bot's own binding would
leave it: a ``chat_bindings`` row (chat_id = user_id = the sandbox chat's
user id, phone = a unique +86138xxxxxxxx number, lang zh, active) and a
``bot_chats`` row.

1. Fan-out. One low-tier warning per bound citizen (signal
   ``fraud_sms_received``, no rule lifting it: the low playbook starts with
   the bot alert only, its auto call comes hours later) goes to the dispatcher
   through POST /v1/warnings/batch, 1,000 records per request, with an ingest
   key created in the database. The dispatcher queues one ``bot.alert`` job
   per warning (the citizen has a chat); the bot delivers them. The sandbox's
   GET /sandbox/telegram/stats is polled every 100 ms until ``sent`` reaches N
   (at most N/30 * 1.5 + 60 s).

   - ``bot_alerts_per_s``: messages the sandbox accepted per second between
     the first and the last accepted send, from the sandbox's own stats:
     (sent - 1) / (last_send_at - first_send_at). The same figure from our
     own timing of the polled counter is printed as a note. The bot's
     limiter sends in bursts (up to 30 at once, then a pause until the second
     is over; the note on the sending pattern shows it), and the span from
     the first to the last send leaves out the last burst's period: the
     figure can read up to ~1/(N/30) high, ~5% with --quick's 600, ~0.3% with
     10,000. Compare full runs.
   - ``bot_alerts_ratio``: that rate over the 30 messages/s allowed.
   - ``bot_alerts_429``: 429s the sandbox returned in the fan-out (total).
   - ``bot_429_after_first``: 429s after the first second of sending. The
     stats carry no times for 429s, so this is the total minus the 429s the
     100 ms polls had seen up to 1.5 s after the first accepted send.
   - ``bot_per_chat_violations``: sends the sandbox accepted less than 1 s
     after the previous one to the same chat, over the whole run (must be 0).
   - ``bot_chats_not_one_message``: bound citizens (fan-out and samples) whose
     chat does not hold exactly one message from the bot at the end, read for
     every chat from GET /sandbox/telegram/chats (one call).

2. ``bot_first_alert_p50_ms`` / ``bot_first_alert_p99_ms``: once the fan-out
   has drained (no due job left on the bot or dispatcher queue), one
   high-tier warning (signal ``transfer_in_progress``) at a time, every
   1.2 s (so neither limit ever bites), each for a fresh bound citizen; 40
   samples (20 with --quick), after one warm-up sample that is not counted.
   Each sample is timed from just before its POST /v1/warnings to the alert's
   ``sent_at`` as the sandbox recorded it (unix time, ms precision; the
   sandbox runs on this machine, so on the same clock as ours). A
   GET /sandbox/telegram/chats/{id}/messages?from=bot&wait=5, sent before the
   POST, returns as soon as the alert is there; our own time of its return is
   the fallback figure and is printed as a note. Nearest-rank percentiles:
   with 40 samples p99 is the slowest one.

Nothing is asserted: the issue's targets (at least 95% of 30 messages/s, no
429 after the first, no citizen two messages in one second, a first alert
under 1 s p99 with nothing else queued) are for the reader to compare.

A table (runs, median, min, max) and notes on where the CPU went during the
fan-out (this client, the sandbox, the dispatcher, the bot, PostgreSQL, the
whole machine) are printed; then the figures are returned (``bench/__init__.py``
prints them as the last line with --json). All traffic goes to 127.0.0.1;
every loop is bounded in count and in time; every subprocess is stopped and
the database is dropped at the end, even on error.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bench.ingest import (
    CALM_FRAUD_TYPES,
    CST,
    REGIONS,
    BenchError,
    DispatcherError,
    ProcCpu,
    ServerProcess,
    _Dispatcher,
    _free_ports,
    _Http,
    _percentile,
    _Report,
    _run_all,
    _verbatim,
    bench_audit_key,
    bench_database,
    machine_idle_note,
)
from shared.db import make_engine, make_sessionmaker, raw_connect, transaction

TELEGRAM_GLOBAL_PER_S = 30  # Telegram's limits, which the sandbox is told to enforce
TELEGRAM_PER_CHAT_PER_S = 1
BATCH_SIZE = 1000
STATS_POLL_S = 0.1
EARLY_429_WINDOW_S = 1.5  # 429s seen this soon after the first accepted send count as "the first second's"
SAMPLE_INTERVAL_S = 1.2
SAMPLE_WAIT_S = 5.0
CHAT_CLIENTS = 4  # connections creating sandbox chats at once
SANDBOX = "/sandbox/telegram"
PHONE_BASE = 13800000000  # +86138xxxxxxxx: the citizen's index in the last 8 digits
# Bot settings that would change what is measured if inherited from the caller's environment.
BOT_ENV_DROPPED = ("TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_URL", "TELEGRAM_WEBHOOK_SECRET",
                   "SHOUHU_BOT_GLOBAL_PER_S", "SHOUHU_BOT_PER_CHAT_INTERVAL_S")


@dataclass(frozen=True)
class _Plan:
    citizens: int
    samples: int

    @classmethod
    def of(cls, quick: bool) -> _Plan:
        return cls(citizens=600, samples=20) if quick else cls(citizens=10_000, samples=40)


class BotBenchError(BenchError):
    """Something the figures depend on did not happen (a send missing, a wrong tier): they would be wrong."""


# ---- the sandbox and the bot as subprocesses (the dispatcher is bench/ingest.py's) ---------------


# ---- talking to the sandbox and the dispatcher --------------------------------------------------------------


async def _json(http: _Http, method: str, path: str, body: Any = None, *, timeout_s: float = 30) -> Any:
    raw = orjson.dumps(body) if body is not None else b""
    status, data = await asyncio.wait_for(http.request(method, path, raw), timeout_s)
    if status >= 300:
        raise BotBenchError(f"{method} {path} answered {_verbatim(status, data)}")
    return orjson.loads(data)


def _phone(index: int) -> str:
    return f"+86{PHONE_BASE + index}"


def _warning(index: int, phone: str, signal: str, tag: str) -> dict[str, Any]:
    """A warning no rule lifts (no amount, score or age; a calm fraud type): its tier is the signal's."""
    occurred = (datetime.now(UTC) - timedelta(seconds=60)).astimezone(CST).replace(microsecond=0)
    return {"source": "bench-bot", "source_ref": f"bench-bot-{tag}-{index}", "phone": phone,
            "fraud_type": CALM_FRAUD_TYPES[index % len(CALM_FRAUD_TYPES)], "signal": signal,
            "region_code": REGIONS[index % len(REGIONS)], "occurred_at": occurred.isoformat()}


async def _create_chats(port: int, count: int, max_s: float) -> list[int]:
    """`count` citizens' chats in the sandbox, each with its own phone; returns chat ids in index order."""
    chat_ids: list[int] = [0] * count
    todo = list(reversed(range(count)))
    deadline = time.monotonic() + max_s

    async def worker() -> None:
        http = _Http(port)
        try:
            while todo:
                if time.monotonic() > deadline:
                    raise BotBenchError(f"creating {count} sandbox chats took over {max_s:.0f} s")
                i = todo.pop()
                chat = await _json(http, "POST", f"{SANDBOX}/chats",
                                   {"phone": _phone(i), "first_name": f"市民{i:05d}"})
                chat_ids[i] = int(chat["chat_id"])
        finally:
            http.close()

    await _run_all([worker() for _ in range(CHAT_CLIENTS)])
    if len(set(chat_ids)) != count:
        raise BotBenchError("the sandbox gave two citizens the same chat id")
    return chat_ids


async def _bind(db_url: str, chat_ids: list[int]) -> None:
    """Write the bindings the bot would have written after each citizen shared their own contact."""
    conn = await raw_connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO bot_chats (chat_id, user_id, lang) SELECT c, c, 'zh' FROM unnest($1::bigint[]) AS u(c)",
                chat_ids)
            await conn.execute(
                "INSERT INTO chat_bindings (chat_id, phone, user_id, lang, active, bound_at)"
                " SELECT c, p, c, 'zh', true, now() FROM unnest($1::bigint[], $2::text[]) AS u(c, p)",
                chat_ids, [_phone(i) for i in range(len(chat_ids))])
    finally:
        await conn.close()


@dataclass
class _Poll:
    wall: float  # time.time() when the answer arrived
    mono: float  # time.perf_counter() then
    sent: int
    rejected_429: int


@dataclass
class _FanOut:
    stats: dict[str, Any]
    polls: list[_Poll]
    post_s: float
    cpu: str
    notes: list[str] = field(default_factory=list)


async def _fan_out(sandbox_port: int, dispatcher_port: int, key: str, phones: list[str], tag: str,
                   procs: dict[str, int]) -> _FanOut:
    n = len(phones)
    stats_http = _Http(sandbox_port)
    posting: asyncio.Task[float] | None = None
    try:
        before = await _json(stats_http, "GET", f"{SANDBOX}/stats")
        if before["sent"] or before["rejected_429"]:
            raise BotBenchError(f"the sandbox had sends before the fan-out: {before}")
        bodies = [orjson.dumps({"warnings": [_warning(i, phones[i], "fraud_sms_received", tag)
                                             for i in range(lo, min(lo + BATCH_SIZE, n))]})
                  for lo in range(0, n, BATCH_SIZE)]

        async def post_all() -> float:
            http = _Http(dispatcher_port, key)
            t0 = time.perf_counter()
            try:
                for body in bodies:
                    status, data = await asyncio.wait_for(http.request("POST", "/v1/warnings/batch", body), 60)
                    if status != 200:
                        raise DispatcherError(f"POST /v1/warnings/batch answered {_verbatim(status, data)}")
                    answer = orjson.loads(data)
                    wrong = [r for r in answer["results"] if r["status"] != "accepted" or r["tier"] != "low"]
                    if wrong:
                        raise BotBenchError(f"{len(wrong)} fan-out warnings not accepted as low tier; first:"
                                            f" {orjson.dumps(wrong[:2]).decode()}")
            finally:
                http.close()
            return time.perf_counter() - t0

        limit_s = n / TELEGRAM_GLOBAL_PER_S * 1.5 + 60
        polls: list[_Poll] = []
        with ProcCpu(procs) as cpu:
            posting = asyncio.create_task(post_all())
            start = time.perf_counter()
            stats = before
            for k in range(int(limit_s / STATS_POLL_S) + 1):
                if posting.done():
                    posting.result()  # raises the poster's error
                stats = await _json(stats_http, "GET", f"{SANDBOX}/stats", timeout_s=10)
                polls.append(_Poll(time.time(), time.perf_counter(), stats["sent"], stats["rejected_429"]))
                if stats["sent"] >= n or time.perf_counter() - start > limit_s:
                    break
                await asyncio.sleep(max(0.0, start + (k + 1) * STATS_POLL_S - time.perf_counter()))
        post_s = await asyncio.wait_for(posting, 60)
        if stats["sent"] < n:
            raise BotBenchError(f"the sandbox accepted {stats['sent']} of {n} alerts within {limit_s:.0f} s;"
                                f" stats: {stats}")
        return _FanOut(stats, polls, post_s, cpu.result)
    finally:
        stats_http.close()
        if posting is not None and not posting.done():
            posting.cancel()
            await asyncio.gather(posting, return_exceptions=True)


async def _wait_drained(db_url: str, max_s: float) -> tuple[bool, float, int]:
    """Until no job is due on the bot or dispatcher queue (bounded); returns (drained, seconds, due left)."""
    conn = await raw_connect(db_url)
    t0 = time.perf_counter()
    due = -1
    try:
        while time.perf_counter() - t0 < max_s:
            due = await conn.fetchval("SELECT count(*) FROM jobs WHERE queue IN ('bot', 'dispatcher')"
                                      " AND status IN ('queued', 'running') AND run_at <= now()")
            if due == 0:
                return True, time.perf_counter() - t0, 0
            await asyncio.sleep(0.25)
        return False, time.perf_counter() - t0, due
    finally:
        await conn.close()


@dataclass
class _FirstAlert:
    sandbox_ms: list[float] = field(default_factory=list)  # POST send -> the sandbox's sent_at
    own_ms: list[float] = field(default_factory=list)  # POST send -> our wait request's return
    answer_ms: list[float] = field(default_factory=list)  # the POST's own answer time
    missing: int = 0


async def _first_alerts(sandbox_port: int, dispatcher_port: int, key: str, chats: list[int], phones: list[str],
                        tag: str) -> _FirstAlert:
    """One high-tier warning at a time for a fresh citizen; chats[0] is the warm-up, not counted."""
    result = _FirstAlert()
    post_http = _Http(dispatcher_port, key)
    wait_http = _Http(sandbox_port)
    try:
        start = time.perf_counter()
        for k, (chat_id, phone) in enumerate(zip(chats, phones, strict=True)):
            await asyncio.sleep(max(0.0, start + k * SAMPLE_INTERVAL_S - time.perf_counter()))
            path = f"{SANDBOX}/chats/{chat_id}/messages?from=bot&wait={SAMPLE_WAIT_S:g}"
            waiting = asyncio.create_task(_json(wait_http, "GET", path, timeout_s=SAMPLE_WAIT_S + 10))
            try:
                await asyncio.sleep(0.005)  # let the wait request reach the sandbox first
                body = orjson.dumps(_warning(10_000_000 + k, phone, "transfer_in_progress", tag))
                t0_wall, t0 = time.time(), time.perf_counter()
                status, data = await asyncio.wait_for(post_http.request("POST", "/v1/warnings", body), 30)
                t1 = time.perf_counter()
                if status != 201:
                    raise DispatcherError(f"POST /v1/warnings answered {_verbatim(status, data)}")
                if orjson.loads(data)["tier"] != "high":
                    raise BotBenchError(f"the sample warning was not high tier: {data[:500]!r}")
            except BaseException:
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
                raise
            messages = (await waiting)["messages"]
            returned = time.perf_counter()
            if not messages:  # one more bounded wait before counting it missing
                messages = (await _json(wait_http, "GET", path, timeout_s=SAMPLE_WAIT_S + 10))["messages"]
                returned = time.perf_counter()
            if k == 0:
                continue  # the warm-up
            if not messages:
                result.missing += 1
                continue
            result.sandbox_ms.append((float(messages[0]["sent_at"]) - t0_wall) * 1000)
            result.own_ms.append((returned - t0) * 1000)
            result.answer_ms.append((t1 - t0) * 1000)
    finally:
        post_http.close()
        wait_http.close()
    return result


# ---- the benchmark ------------------------------------------------------------------------------------------


async def bench_bot(quick: bool) -> dict[str, float]:
    """Alert fan-out rate within Telegram's limits (429s, per-chat spacing) and time to the first alert."""
    from shared.auth.service import create_key

    report = _Report()
    report.notes.append(await machine_idle_note())
    plan = _Plan.of(quick)
    async with bench_database() as db_url:
        engine = make_engine(db_url, pool_size=1, application_name="shouhu-bench", audit_key=bench_audit_key())
        try:
            async with transaction(make_sessionmaker(engine)) as session:
                _, key = await create_key(session, role="ingest", unit="", name="bench-bot")
        finally:
            await engine.dispose()
        sandbox_port, dispatcher_port, bot_port = _free_ports(3)
        base_env = {**os.environ, "SHOUHU_LOG_LEVEL": "WARNING"}
        sandbox = ServerProcess("sandbox", ["sandbox"], sandbox_port, base_env, "/healthz")
        bot_env = {k: v for k, v in base_env.items() if k not in BOT_ENV_DROPPED}
        bot_env |= {"DATABASE_URL": db_url, "TELEGRAM_API_BASE": f"http://127.0.0.1:{sandbox_port}",
                    "SHOUHU_BOT_WORKER": "true", "SHOUHU_BOT_POLLING": "true"}
        bot = ServerProcess("bot", ["serve", "bot"], bot_port, bot_env, "/readyz")
        dispatcher = _Dispatcher(db_url, dispatcher_port)
        async with AsyncExitStack() as stack:
            # Stopped in reverse: the bot (it polls the sandbox) first, the sandbox last.
            stack.push_async_exit(sandbox.__aexit__)
            sandbox.spawn()
            await sandbox.wait_ready()
            stack.push_async_exit(dispatcher.__aexit__)
            dispatcher.spawn()
            stack.push_async_exit(bot.__aexit__)
            bot.spawn()
            await _run_all([dispatcher.wait_ready(60.0), bot.wait_ready()])
            figures = await _measure(sandbox, dispatcher, bot, db_url, key, plan, report)
        for label, server in (("sandbox", sandbox), ("dispatcher", dispatcher), ("bot", bot)):
            if server.errors:
                report.notes.append(f"{label} log errors (verbatim):")
                report.notes.extend(f"  {line[:400]}" for line in server.errors)
    report.print()
    return figures


async def _measure(sandbox: ServerProcess, dispatcher: _Dispatcher, bot: ServerProcess, db_url: str, key: str, plan: _Plan,
                   report: _Report) -> dict[str, float]:
    assert dispatcher.proc is not None
    procs = {"sandbox": sandbox.pid, "dispatcher": dispatcher.proc.pid, "bot": bot.pid}
    control = _Http(sandbox.port)
    try:
        limits = await _json(control, "POST", f"{SANDBOX}/limits",
                             {"global_per_s": TELEGRAM_GLOBAL_PER_S, "per_chat_per_s": TELEGRAM_PER_CHAT_PER_S})
        if limits != {"global_per_s": TELEGRAM_GLOBAL_PER_S, "per_chat_per_s": TELEGRAM_PER_CHAT_PER_S}:
            raise BotBenchError(f"the sandbox did not take Telegram's limits: {limits}")
    finally:
        control.close()
    report.notes.append(
        f"processes: sandbox :{sandbox.port} (pid {sandbox.pid}), dispatcher :{dispatcher.port}"
        f" (pid {dispatcher.proc.pid}), bot :{bot.port} (pid {bot.pid}); sandbox limits {limits}")

    # Binding: chats through the sandbox's control API, bindings straight into the database (see the docstring).
    n = plan.citizens
    total = n + 1 + plan.samples  # the fan-out's citizens, then the warm-up sample's, then the samples'
    t0 = time.perf_counter()
    chat_ids = await _create_chats(sandbox.port, total, max_s=60 + total / 50)
    await _bind(db_url, chat_ids)
    report.notes.append(f"binding: {total} sandbox chats created and bound in the database in"
                        f" {time.perf_counter() - t0:.1f} s ({n} for the fan-out, {1 + plan.samples} for the"
                        f" first-alert samples)")
    phones = [_phone(i) for i in range(total)]
    tag = secrets.token_hex(3)

    # 1. Fan-out.
    fan = await _fan_out(sandbox.port, dispatcher.port, key, phones[:n], tag, procs)
    stats = fan.stats
    first, last = float(stats["first_send_at"]), float(stats["last_send_at"])
    rate = (stats["sent"] - 1) / max(last - first, 1e-9)
    early = max((p.rejected_429 for p in fan.polls if p.wall <= first + EARLY_429_WINDOW_S), default=0)
    after_first = stats["rejected_429"] - early
    # Our own timing of the counter: from the first poll that saw a send to the poll that saw all N.
    seen = [p for p in fan.polls if p.sent > 0]
    own_rate = ((seen[-1].sent - seen[0].sent) / (seen[-1].mono - seen[0].mono)
                if len(seen) >= 2 and seen[-1].mono > seen[0].mono else float("nan"))
    fan_violations = int(stats["per_chat_violations"])
    # How even the sending was: accepted sends between consecutive 100 ms polls, while sending.
    steps = [b.sent - a.sent for a, b in zip(fan.polls, fan.polls[1:], strict=False) if a.sent > 0 and a.sent < n]

    drained, drain_s, due_left = await _wait_drained(db_url, max_s=180)

    # 2. First alert, nothing else queued.
    first_alerts = await _first_alerts(sandbox.port, dispatcher.port, key, chat_ids[n:], phones[n:], tag)
    if not first_alerts.sandbox_ms:
        raise BotBenchError("no first-alert sample reached its chat")

    # Every bound citizen: exactly one message from the bot (all chats in one control-API call).
    control = _Http(sandbox.port)
    try:
        listing = await _json(control, "GET", f"{SANDBOX}/chats", timeout_s=60)
        end_stats = await _json(control, "GET", f"{SANDBOX}/stats")
    finally:
        control.close()
    from_bot = {int(c["chat_id"]): int(c["from_bot"]) for c in listing["chats"]}
    counted = chat_ids  # the fan-out's, the warm-up's and the samples'
    not_one = [cid for cid in counted if from_bot.get(cid, 0) != 1]
    conn = await raw_connect(db_url)
    try:
        deliveries = dict(await conn.fetch("SELECT status, count(*) FROM bot_deliveries GROUP BY status"))
        dead = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'failed'")
    finally:
        await conn.close()

    report.rows.append(("bot_alerts_per_s", 1, rate, rate, rate,
                        "msg/s accepted by the sandbox, (sent-1)/(last_send_at-first_send_at)"))
    report.rows.append(("bot_alerts_ratio", 1, rate / TELEGRAM_GLOBAL_PER_S, rate / TELEGRAM_GLOBAL_PER_S,
                        rate / TELEGRAM_GLOBAL_PER_S, f"of the {TELEGRAM_GLOBAL_PER_S} msg/s allowed"))
    report.add("bot_alerts_429", [stats["rejected_429"]], "429s during the fan-out (total)")
    report.add("bot_429_after_first", [after_first],
               f"429s after the first {EARLY_429_WINDOW_S:g} s of sending (total minus those polled by then)")
    report.add("bot_per_chat_violations", [end_stats["per_chat_violations"]],
               "sends <1 s after the previous one to the same chat (whole run)")
    report.add("bot_chats_not_one_message", [len(not_one)], f"of {len(counted)} bound citizens")
    lat = first_alerts.sandbox_ms
    p50, p99 = _percentile(lat, 50), _percentile(lat, 99)
    report.rows.append(("bot_first_alert_p50_ms", len(lat), p50, min(lat), max(lat),
                        "ms, POST sent -> sandbox sent_at (nothing else queued)"))
    report.rows.append(("bot_first_alert_p99_ms", len(lat), p99, min(lat), max(lat),
                        "ms, POST sent -> sandbox sent_at (nearest rank)"))

    own = first_alerts.own_ms
    report.notes.append(
        f"fan-out: {n} low-tier warnings posted in {len(range(0, n, BATCH_SIZE))} batch request(s) in"
        f" {fan.post_s:.1f} s; sandbox sent {stats['sent']} from {first:.3f} to {last:.3f}"
        f" ({last - first:.1f} s); our own timing of the polled counter: {own_rate:.2f} msg/s;"
        f" 429s polled by first send + {EARLY_429_WINDOW_S:g} s: {early}; per-chat violations during the fan-out:"
        f" {fan_violations}; {len(fan.polls)} stats polls")
    if steps:
        report.notes.append(f"sending pattern: sends per {STATS_POLL_S * 1000:.0f} ms poll interval: max {max(steps)},"
                            f" none in {100 * sum(1 for x in steps if x == 0) / len(steps):.0f}% of intervals"
                            f" (an even 30 msg/s would be ~3 in every one)")
    report.notes.append(f"CPU during the fan-out: {fan.cpu}")
    report.notes.append(
        "queues after the fan-out: " + (f"drained in {drain_s:.1f} s" if drained else
                                        f"NOT drained after {drain_s:.0f} s ({due_left} due jobs left)"))
    report.notes.append(
        f"first alert: {len(lat)} samples every {SAMPLE_INTERVAL_S:g} s (+1 warm-up), {first_alerts.missing}"
        f" missing; our own timing (wait request's return): p50 {_percentile(own, 50):.0f} ms,"
        f" p99 {_percentile(own, 99):.0f} ms; the POST's own answer: p50"
        f" {_percentile(first_alerts.answer_ms, 50):.0f} ms, p99 {_percentile(first_alerts.answer_ms, 99):.0f} ms")
    report.notes.append(f"bot_deliveries by status: {deliveries}; dead-lettered jobs: {dead};"
                        f" sandbox at the end: sent {end_stats['sent']}, 429 {end_stats['rejected_429']},"
                        f" 403 {end_stats['blocked_403']}")
    if not_one:
        report.notes.append(f"chats without exactly one message (first 10): "
                            f"{[(c, from_bot.get(c, 0)) for c in not_one[:10]]}")

    return {
        "bot_alerts_per_s": round(rate, 2),
        "bot_alerts_ratio": round(rate / TELEGRAM_GLOBAL_PER_S, 3),
        "bot_alerts_429": float(stats["rejected_429"]),
        "bot_429_after_first": float(after_first),
        "bot_per_chat_violations": float(end_stats["per_chat_violations"]),
        "bot_chats_not_one_message": float(len(not_one)),
        "bot_first_alert_p50_ms": round(p50, 1),
        "bot_first_alert_p99_ms": round(p99, 1),
    }

