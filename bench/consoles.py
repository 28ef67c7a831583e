"""`shouhu bench consoles`: how fast the supervisor's pages answer with one million tasks in the database.

The issue's targets: with 1,000,000 tasks, the overview and the compliance
report for a province answer in under 300 ms (p95), the audit search for one
case in under 50 ms (p95). Nothing is asserted here: the figures are printed
for the reader to compare.

Data (a fresh database from ``bench_database()``, migrated to head). Loaded
with SQL, not through the HTTP API: the API stamps every task with the
current time, so 60 days of history, with deadlines passed, outcomes and
closures, cannot be made through it without a million more feedback calls;
how fast the API ingests is what ``shouhu bench ingest`` measures.

- tasks and cases: one ``INSERT ... SELECT FROM generate_series`` builds every
  task's attributes into a scratch table (seeded ``random()``, so every run
  loads the same data relative to its own "now"), then one INSERT each into
  ``cases`` and ``tasks`` in creation order, through every index and foreign
  key the migrations made. 1,000,000 tasks (20,000 with --quick;
  ``SHOUHU_BENCH_CONSOLE_TASKS`` overrides), created evenly over the last 60
  days; 31 provinces with a skew (``33`` has 8%, Guangdong 9%, Tibet 0.3%),
  several cities per province (the capital busiest) and districts; tiers 10%
  high / 30% medium / 60% low with the default policy's deadlines (2 h / 24 h
  / 72 h); ~96% closed with an outcome within the deadline, ~4% closed late
  (breached), 0.1% never closed; those whose closure lies after "now" are
  still being worked: ~8,400 open at 1M (0.8%), some escalated, some breached.
  Outcomes, reach times and one case per task, as the dispatcher leaves them
  (case ids and task ids are time-ordered, like uuid7).
- the audit log: 3-5 entries per task (3.5 on average), for every task
  (task.created, a merged warning for some, channel results, escalation and
  breach where they happened, task.closed), in time order across all tasks,
  as the dispatcher writes them. The log is append-only (triggers refuse
  UPDATE, DELETE and TRUNCATE, not INSERT) and hash-chained at COMMIT through
  ``audit_staging``; going through the staging row for millions of entries
  would chain them in one PL/pgSQL loop. So the loader takes the path the
  trigger itself takes: in one transaction (as the owner) it locks the chain
  head, computes each entry's keyed hash with ``shared.audit.service.entry_hash``
  (the function ``verify`` checks with) linked to the previous one, COPYs the
  rows into ``audit_log`` and moves the head forward with its signature. No
  trigger is disabled, and the chain is
  valid: after the measurements GET /v1/audit/verify walks it end to end
  (~50 s at 3.5M entries), and the figure ``audit_chain_ok`` says so.
- ``VACUUM (ANALYZE)`` on the loaded tables afterwards: a table that has
  lived in production for 60 days has been vacuumed and analyzed by
  autovacuum; a freshly bulk-loaded one has neither statistics nor a
  visibility map, and its first readers would pay for setting hint bits.

Measured against one real dispatcher process (``shouhu serve dispatcher``, as
``shouhu bench ingest`` starts it) on 127.0.0.1, with a supervisor key for
unit ``33`` (a province):

- ``overview_*``: GET /console, the supervisor's overview page (HTML: live
  counts by tier and status, compliance over 7 days, the 25 most urgent
  tasks), with a session cookie obtained as a browser does: GET
  /console/sign-in (CSRF cookie and form field), POST /console/sign-in.
- ``overview_api_*``: GET /v1/reports/overview?unit=33 (JSON; the live part).
- ``compliance_*``: GET /v1/reports/compliance?unit=33 (default period: the
  last 7 days).
- ``audit_case_*``: GET /v1/audit?case_id=... for one case of province 33
  with entries; each request asks for another case (200 drawn at random).
- baselines, through the same HTTP path and client: ``healthz_baseline_*``
  (GET /healthz: no key, no database) and ``api_baseline_*`` (GET
  /v1/audit?case_id=<a case that has no entries>: the key checked (through
  the dispatcher's key cache), a session opened, one indexed query that finds nothing: the floor any read route of
  the dispatcher pays). ``*_ratio`` = the figure's p95 / the api baseline's
  p95; the machine has two noisy shared cores, so a ratio says more from run
  to run than milliseconds do.

Sequential: ``rounds`` rounds (200; 30 with --quick) after a few uncounted
warm-up rounds; each round sends one request of every kind, in a shuffled
order, one at a time on one keep-alive connection each, so every figure sees
the same machine. Then a short concurrent phase: 4 clients at once, each
sending the same mix (``*_c4_p95_ms``). Nearest-rank percentiles. Printed: a
table (count, p50, p95, max), notes on where the CPU went, how the data was
loaded and how long that took, and EXPLAIN (ANALYZE, BUFFERS) of the very
statements the routes run, with their parameters (the tables read, the indexes
used, the execution time of the second of two runs). Those plans are made for
the parameters' values; the measured requests go through the dispatcher's
prepared statements, where PostgreSQL may use a generic plan after five runs
(see reports.service.plan_for_values): only the HTTP figures show that.
Every loop is bounded; the dispatcher is stopped and the database dropped at
the end, even on error.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import random
import re
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from bench.ingest import (
    BenchError,
    ProcCpu,
    _describe,
    _Dispatcher,
    _free_ports,
    _Http,
    _percentile,
    _verbatim,
    bench_audit_key,
    bench_database,
    machine_idle_note,
)
from services.dispatcher.warnings.schemas import FRAUD_TYPES
from shared.audit.keys import head_signature, key_bytes
from shared.audit.service import canonical_json, entry_hash, iso_utc
from shared.db import make_engine, make_sessionmaker, raw_connect, transaction

UNIT = "33"
DAYS = 60
# Province code, share of all warnings (%), cities. Roughly by population, with Zhejiang (33, the unit measured)
# over its share, as a province with a busy anti-fraud centre is.
PROVINCES: tuple[tuple[str, float, int], ...] = (
    ("11", 1.5, 16), ("12", 1.0, 16), ("13", 5.0, 11), ("14", 2.5, 11), ("15", 1.7, 12), ("21", 3.0, 14),
    ("22", 1.7, 9), ("23", 2.2, 13), ("31", 1.7, 16), ("32", 6.0, 13), ("33", 8.0, 11), ("34", 4.3, 16),
    ("35", 2.9, 9), ("36", 3.2, 11), ("37", 7.0, 16), ("41", 7.0, 17), ("42", 4.1, 13), ("43", 4.7, 14),
    ("44", 9.0, 21), ("45", 3.5, 14), ("46", 0.7, 4), ("50", 2.3, 2), ("51", 6.0, 21), ("52", 2.7, 9),
    ("53", 3.3, 16), ("54", 0.3, 7), ("61", 2.8, 10), ("62", 1.7, 14), ("63", 0.4, 8), ("64", 0.5, 5),
    ("65", 1.8, 14),
)
STUCK = 0.001  # never closed: still open, breached, escalated
LATE = 0.04  # closed after the deadline (breached)
OUTCOMES = (("acknowledged", 0.42), ("dissuaded", 0.20), ("unreachable", 0.12), ("false_positive", 0.10),
            ("refused", 0.10), ("loss_reported", 0.06))
SOURCES = ("bank-icbc-zj", "bank-abc-js", "telecom-cm-zj", "app-guard", "police-96110")
SIGNALS = {"high": "transfer_in_progress", "medium": "fraud_call_received", "low": "fraud_sms_received"}
INGEST_ACTOR = "key:5b1e0c7d9a2f:bank-feed"
AUDIT_CASES = 200  # cases of the unit the audit search rotates over
CONCURRENT_CLIENTS = 4
SEED = 0.20261121


@dataclass(frozen=True)
class _Plan:
    tasks: int
    warmup_rounds: int
    rounds: int
    concurrent_rounds: int  # per client

    @classmethod
    def of(cls, quick: bool) -> _Plan:
        raw = os.environ.get("SHOUHU_BENCH_CONSOLE_TASKS", "").strip()
        tasks = 20_000 if quick else 1_000_000
        if raw:
            try:
                tasks = int(raw)
            except ValueError:
                raise ValueError(f"SHOUHU_BENCH_CONSOLE_TASKS must be a whole number, not {raw!r}") from None
            if not 1_000 <= tasks <= 20_000_000:
                raise ValueError(f"SHOUHU_BENCH_CONSOLE_TASKS must be between 1,000 and 20,000,000, not {tasks}")
        if quick:
            return cls(tasks=tasks, warmup_rounds=3, rounds=30, concurrent_rounds=5)
        return cls(tasks=tasks, warmup_rounds=10, rounds=200, concurrent_rounds=25)


# ---- loading --------------------------------------------------------------------------------------------

_GEN_TABLE = (
    "CREATE UNLOGGED TABLE bench_gen (i int PRIMARY KEY, task_id uuid, case_id uuid, created_at timestamptz,"
    " region_code text, tier text, fraud_type text, due_at timestamptz, status text, outcome text,"
    " closed_at timestamptz, closed_by text, reached_at timestamptz, breached bool, breached_at timestamptz,"
    " escalated_at timestamptz, has_chat bool, warnings int)"
)

# $1 start, $2 span (s), $3 count, $4 province thresholds, $5 province codes, $6 cities per province,
# $7-$9 deadlines (min) high/medium/low, $10 escalation fraction, $11 now, $12 fraud types.
_GENERATE = f"""
INSERT INTO bench_gen
WITH base AS (
  SELECT i, $1::timestamptz + ((i + random()) * $2::float8 / $3::int) * interval '1 second' AS created_at,
    width_bucket(random(), $4::float8[]) AS p, random() AS r_city, random() AS r_dist, random() AS r_tier,
    random() AS r_fate, random() AS r_close, random() AS r_outcome, random() AS r_reach, random() AS r_fraud,
    random() AS r_chat, random() AS r_warn, random() AS r_status
  FROM generate_series(0, $3::int - 1) AS i
), placed AS (
  SELECT b.*,
    ($5::text[])[p] || lpad((1 + floor(power(r_city, 1.7) * ($6::int[])[p]))::int::text, 2, '0')
      || lpad((2 + floor(power(r_dist, 1.3) * 10))::int::text, 2, '0') AS region_code,
    CASE WHEN r_tier < 0.10 THEN 'high' WHEN r_tier < 0.40 THEN 'medium' ELSE 'low' END AS tier
  FROM base b
), timed AS (
  SELECT t.*, (CASE tier WHEN 'high' THEN $7::float8 WHEN 'medium' THEN $8::float8 ELSE $9::float8 END)
    * interval '1 minute' AS deadline
  FROM placed t
), fated AS (
  SELECT t.*, created_at + deadline AS due_at, created_at + deadline * $10::float8 AS escalate_at,
    CASE WHEN r_fate < {STUCK} THEN NULL
         WHEN r_fate < {STUCK + LATE} THEN created_at + deadline * (1 + 0.5 * r_close)
         ELSE created_at + deadline * power(r_close, 5) END AS closes_at
  FROM timed t
), settled AS (
  SELECT f.*, closes_at IS NOT NULL AND closes_at <= $11::timestamptz AS closed,
    CASE {" ".join(f"WHEN r_outcome < {sum(w for _, w in OUTCOMES[:k + 1]):.4f} THEN '{o}'"
                   for k, (o, _) in enumerate(OUTCOMES[:-1]))} ELSE '{OUTCOMES[-1][0]}' END AS picked
  FROM fated f
)
SELECT i,
  (lpad(to_hex((extract(epoch FROM created_at) * 1000)::bigint), 12, '0') || '7'
    || substr(md5('t' || i), 1, 3) || '8' || substr(md5('t' || i), 4, 15))::uuid,
  (lpad(to_hex((extract(epoch FROM created_at) * 1000)::bigint), 12, '0') || '7'
    || substr(md5('c' || i), 1, 3) || '9' || substr(md5('c' || i), 4, 15))::uuid,
  created_at, region_code, tier, ($12::text[])[1 + floor(r_fraud * array_length($12::text[], 1))::int], due_at,
  CASE WHEN closed THEN 'closed' WHEN r_status < 0.45 THEN 'in_progress' ELSE 'open' END,
  CASE WHEN closed THEN picked END,
  CASE WHEN closed THEN closes_at END,
  CASE WHEN NOT closed THEN NULL WHEN picked = 'acknowledged' THEN 'citizen:bot_alert'
       ELSE 'key:' || substr(md5(left(region_code, 4)), 1, 12) || ':officer-' || left(region_code, 4) END,
  CASE WHEN closed AND picked = 'acknowledged' THEN closes_at
       WHEN closed AND picked <> 'unreachable' THEN created_at + (closes_at - created_at) * r_reach
       WHEN NOT closed AND r_status < 0.45 THEN created_at + ($11::timestamptz - created_at) * r_reach * 0.5 END,
  due_at <= $11::timestamptz AND (closes_at IS NULL OR closes_at > due_at),
  CASE WHEN due_at <= $11::timestamptz AND (closes_at IS NULL OR closes_at > due_at) THEN due_at END,
  CASE WHEN escalate_at <= $11::timestamptz AND (closes_at IS NULL OR closes_at > escalate_at) THEN escalate_at END,
  r_chat < 0.3,
  1 + (r_warn < 0.10)::int + (r_warn < 0.02)::int
FROM settled
"""

_CASES = (
    "INSERT INTO cases (id, phone, status, tier, region_code, warning_count, first_warning_at, last_warning_at,"
    " created_at, closed_at)"
    " SELECT case_id, '+86138' || lpad(i::text, 8, '0'), CASE WHEN status = 'closed' THEN 'closed' ELSE 'open' END,"
    " tier, region_code, warnings, created_at, created_at + (warnings - 1) * interval '3 minutes', created_at,"
    " closed_at FROM bench_gen ORDER BY i"
)

# steps_done / attempts: what a plan has done by the time it closed (sizes like the dispatcher's own rows).
_TASKS = (
    "INSERT INTO tasks (id, case_id, phone, region_code, fraud_type, tier, status, outcome, policy_version,"
    " created_at, plan_started_at, plan_seq, steps_done, due_at, breached, breached_at, escalated_at, reached_at,"
    " has_chat, attempts, closed_at, closed_by)"
    " SELECT task_id, case_id, '+86138' || lpad(i::text, 8, '0'), region_code, fraud_type, tier, status, outcome, $1,"
    " created_at, created_at, 1, CASE WHEN escalated_at IS NULL THEN '{}'::text[]"
    "   ELSE ARRAY['channel:operator_call', 'visit', 'escalate'] END,"
    " due_at, breached, breached_at, escalated_at, reached_at, has_chat,"
    " jsonb_build_object('auto_call', 1, 'bot_alert', has_chat::int, 'seen',"
    "   jsonb_build_array('auto_call:1:' || CASE WHEN reached_at IS NULL THEN 'no_answer' ELSE 'answered' END || ':')),"
    " closed_at, closed_by FROM bench_gen ORDER BY i"
)

_READ_GEN = (
    "SELECT i, task_id, case_id, created_at, region_code, tier, fraud_type, due_at, status, outcome, closed_at,"
    " closed_by, reached_at, breached_at, escalated_at, has_chat, warnings FROM bench_gen ORDER BY i"
)

AUDIT_COLUMNS = ["seq", "at", "actor", "action", "task_id", "case_id", "region_code", "body", "prev_hash", "hash"]


@dataclass
class _Loaded:
    tasks: int = 0
    open_tasks: int = 0
    unit_tasks: int = 0
    audit_rows: int = 0
    audit_cases: list[uuid.UUID] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _events(row: Any, policy_version: str, now: datetime) -> Iterator[tuple[datetime, str, str, dict[str, Any]]]:
    """(at, actor, action, body) of what the dispatcher audits over one task's life, up to `now`."""
    created, tier = row["created_at"], row["tier"]
    i = row["i"]
    source = SOURCES[i % len(SOURCES)]
    reasons = [{"rule": "signal", "effect": tier, "why": f"signal {SIGNALS[tier]} suggests {tier}"}]
    yield created, INGEST_ACTOR, "task.created", {
        "warning_id": str(uuid.UUID(int=row["task_id"].int ^ 0x5A5A)), "source": source,
        "source_ref": f"{source}-{i:09d}", "signal": SIGNALS[tier], "fraud_type": row["fraud_type"],
        "warning_tier": tier, "reasons": reasons, "task_tier": tier, "due_at": iso_utc(row["due_at"]),
        "policy_version": policy_version, "notes": [],
        "channels_started": ["auto_call", "bot_alert"] if row["has_chat"] or tier != "low" else ["bot_alert"],
    }
    for k in range(1, row["warnings"]):
        at = created + timedelta(minutes=3 * k)
        if at <= now:
            yield at, INGEST_ACTOR, "warning.merged", {
                "warning_id": str(uuid.UUID(int=row["task_id"].int ^ (0x5A5A + k))), "source": source,
                "source_ref": f"{source}-{i:09d}-{k}", "signal": SIGNALS[tier], "fraud_type": row["fraud_type"],
                "warning_tier": tier, "reasons": reasons, "task_tier": tier, "due_at": iso_utc(row["due_at"]),
                "policy_version": policy_version}
    if row["has_chat"]:
        at = created + timedelta(seconds=2)
        if at <= now:
            yield at, "channel:bot_alert", "task.channel_result", {
                "channel": "bot_alert", "attempt": 1, "result": "delivered", "detail": None, "feedback": None}
    reached = row["reached_at"]
    if reached is not None:
        yield reached, "channel:auto_call", "task.channel_result", {
            "channel": "auto_call", "attempt": 1, "result": "answered", "detail": None, "feedback": None}
    else:
        at = created + timedelta(seconds=45)
        if at <= now:
            yield at, "channel:auto_call", "task.channel_result", {
                "channel": "auto_call", "attempt": 1, "result": "no_answer", "detail": "no answer after 30 s",
                "feedback": None}
    if row["escalated_at"] is not None:
        yield row["escalated_at"], "system:timer", "task.escalated", {
            "to": "supervisor", "why": "still open at 75% of the deadline"}
    if row["breached_at"] is not None:
        yield row["breached_at"], "system:timer", "task.breached", {
            "due_at": iso_utc(row["due_at"]), "why": "deadline passed without an outcome"}
    if row["status"] == "closed":
        yield row["closed_at"], row["closed_by"], "task.closed", {
            "before": {"status": "in_progress" if reached else "open", "tier": tier},
            "after": {"status": "closed", "outcome": row["outcome"]}, "note": None, "cancelled_jobs": 1,
            "within_deadline": row["closed_at"] <= row["due_at"]}


async def _audit_records(gen_conn: Any, head: tuple[int, str], policy_version: str, now: datetime,
                         counter: list[Any], key: bytes) -> AsyncIterator[tuple[Any, ...]]:
    """Every task's entries, merged into time order across tasks, numbered and hash-chained (keyed) from `head`."""
    seq, prev = head
    pending: list[tuple[datetime, int, str, str, Any, Any, str, str]] = []
    n = 0

    def chained(entry: tuple[datetime, int, str, str, Any, Any, str, str]) -> tuple[Any, ...]:
        nonlocal seq, prev
        at, _, actor, action, task_id, case_id, region, body = entry
        seq += 1
        digest = entry_hash(seq=seq, at=at, actor=actor, action=action, task_id=task_id, case_id=case_id,
                            region_code=region, body=body, prev_hash=prev, key=key)
        record = (seq, at, actor, action, task_id, case_id, region, body, prev, digest)
        prev = digest
        counter[0], counter[1] = seq, digest
        return record

    async with gen_conn.transaction():
        async for row in gen_conn.cursor(_READ_GEN, prefetch=10_000):
            created = row["created_at"]
            # Tasks come in creation order, so every pending entry before this task's creation is final.
            while pending and pending[0][0] <= created:
                yield chained(heapq.heappop(pending))
            for at, actor, action, body in _events(row, policy_version, now):
                n += 1
                heapq.heappush(pending, (at, n, actor, action, row["task_id"], row["case_id"], row["region_code"],
                                         canonical_json(body)))
    while pending:
        yield chained(heapq.heappop(pending))


async def _load(db_url: str, tasks: int, now: datetime) -> _Loaded:
    """Tasks, cases and the audit log, as described in the module docstring."""
    from services.dispatcher.policy.service import PolicyStore, load_policy
    from services.dispatcher.settings import DispatcherSettings

    loaded = _Loaded(tasks=tasks)
    policy = load_policy(DispatcherSettings().policy_path)
    engine = make_engine(db_url, pool_size=1, application_name="shouhu-bench-load", audit_key=bench_audit_key())
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await PolicyStore(policy).register_current(session)  # the tasks' foreign key
    finally:
        await engine.dispose()
    version = policy.version
    total = sum(w for _, w, _ in PROVINCES)
    thresholds, acc = [], 0.0
    for _, weight, _ in PROVINCES:
        thresholds.append(acc / total)
        acc += weight
    playbooks = [policy.playbook(t) for t in ("high", "medium", "low")]
    fraction = playbooks[0].escalate_at_fraction or 0.75
    conn = await raw_connect(db_url)
    gen_conn = await raw_connect(db_url)
    try:
        t0 = time.perf_counter()
        await conn.execute(f"SELECT setseed({SEED})")
        await conn.execute(_GEN_TABLE)
        await conn.execute(_GENERATE, now - timedelta(days=DAYS), DAYS * 86400.0, tasks, thresholds,
                           [p for p, _, _ in PROVINCES], [c for _, _, c in PROVINCES],
                           *[float(p.deadline_minutes) for p in playbooks], fraction, now, list(FRAUD_TYPES))
        t1 = time.perf_counter()
        await conn.execute(_CASES)
        t2 = time.perf_counter()
        await conn.execute(_TASKS, version)
        t3 = time.perf_counter()
        loaded.seconds.update(generate=t1 - t0, cases=t2 - t1, tasks=t3 - t2)
        loaded.open_tasks = await conn.fetchval("SELECT count(*) FROM bench_gen WHERE status <> 'closed'")
        loaded.unit_tasks = await conn.fetchval("SELECT count(*) FROM bench_gen WHERE region_code LIKE $1",
                                                UNIT + "%")

        # The audit log: in one transaction, from the chain's head, hashed and the head signed as audit_seal()
        # would (with the key: shared/audit/keys.py).
        key = key_bytes(bench_audit_key())
        counter: list[Any] = [0, ""]
        async with conn.transaction():
            row = await conn.fetchrow("SELECT seq, hash, keyed_from FROM audit_chain_head WHERE id = 1 FOR UPDATE")
            head = (row["seq"], row["hash"])
            await conn.copy_records_to_table(
                "audit_log", columns=AUDIT_COLUMNS,
                records=_audit_records(gen_conn, head, version, now, counter, key))  # type: ignore[arg-type]
            await conn.execute("UPDATE audit_chain_head SET seq = $1, hash = $2, mac = $3 WHERE id = 1",
                               counter[0], counter[1],
                               head_signature(key, seq=counter[0], hash_=counter[1], keyed_from=row["keyed_from"]))
        t4 = time.perf_counter()
        loaded.audit_rows = counter[0] - head[0]
        loaded.seconds["audit"] = t4 - t3
        # Cases of the unit with entries, for the audit search (every task has entries).
        loaded.audit_cases = [r["case_id"] for r in await conn.fetch(
            "SELECT case_id FROM bench_gen WHERE region_code LIKE $1 ORDER BY md5(i::text) LIMIT $2",
            UNIT + "%", AUDIT_CASES)]
        await conn.execute("DROP TABLE bench_gen")
        for table in ("tasks", "cases", "audit_log"):
            await conn.execute(f"VACUUM (ANALYZE) {table}")
        loaded.seconds["vacuum"] = time.perf_counter() - t4
        sizes = await conn.fetch(
            "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c"
            " WHERE c.relname IN ('tasks', 'cases', 'audit_log') ORDER BY 1")
        loaded.notes.append("sizes with indexes: " + ", ".join(f"{r['relname']} {r['bytes'] / 2**20:.0f} MB"
                                                                 for r in sizes))
    finally:
        await gen_conn.close()
        await conn.close()
    return loaded


# ---- measuring ------------------------------------------------------------------------------------------


class _CookieHttp(_Http):
    """The bench's keep-alive client, sending a browser's session cookie instead of a key."""

    def __init__(self, port: int, cookie: str) -> None:
        super().__init__(port)
        self.auth = f"Cookie: {cookie}\r\n"


async def _sign_in(port: int, key: str) -> str:
    """Sign in as a browser does; returns the session cookie ("name=value")."""
    from services.dispatcher.console.views import console

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as browser:
        page = await browser.get("/console/sign-in")
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if page.status_code != 200 or found is None:
            raise BenchError(f"GET /console/sign-in: {_verbatim(page.status_code, page.content)}")
        answer = await browser.post("/console/sign-in", data={"api_key": key, "csrf_token": found.group(1),
                                                              "next": "/console"})
        token = browser.cookies.get(console.cookie)
        if answer.status_code != 303 or not token:
            raise BenchError(f"POST /console/sign-in: {_verbatim(answer.status_code, answer.content)}")
    return f"{console.cookie}={token}"


@dataclass
class _Kind:
    """One kind of request: its figure's name, its client, its paths (taken in turn), what its answers must hold."""

    name: str
    paths: tuple[str, ...]
    cookie: str | None = None
    key: str | None = None
    marker: bytes = b""
    sent: int = 0

    def client(self, port: int) -> _Http:
        return _CookieHttp(port, self.cookie) if self.cookie else _Http(port, self.key)

    def next_path(self) -> str:
        self.sent += 1
        return self.paths[self.sent % len(self.paths)]


async def _timed(kind: _Kind, http: _Http, out: list[float]) -> None:
    path = kind.next_path()
    t0 = time.perf_counter()
    status, data = await asyncio.wait_for(http.request("GET", path), 60)
    ms = (time.perf_counter() - t0) * 1000
    if status != 200 or kind.marker not in data:
        raise BenchError(f"GET {path}: {_verbatim(status, data)}")
    out.append(ms)


async def _rounds(kinds: list[_Kind], port: int, rounds: int, rng: random.Random,
                  out: dict[str, list[float]]) -> None:
    """`rounds` rounds of one request of every kind, in a shuffled order, one at a time."""
    clients = {k.name: k.client(port) for k in kinds}
    try:
        for _ in range(rounds):
            order = kinds[:]
            rng.shuffle(order)
            for kind in order:
                await _timed(kind, clients[kind.name], out.setdefault(kind.name, []))
    finally:
        for http in clients.values():
            http.close()


def _audit_path(case_id: Any) -> str:
    return f"/v1/audit?case_id={case_id}"


def _summary(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), _percentile(values, 95), max(values)


class _Explain:
    """Stands in for a session: each statement a service function runs is EXPLAINed on the real one instead.

    So the plans shown are those of the very statements (text and bound parameters) the routes run, through the
    same driver. Every statement answers with no rows.
    """

    def __init__(self, session: Any) -> None:
        self.session = session
        self.plans: list[tuple[str, list[str]]] = []

    async def execute(self, statement: Any, params: dict[str, Any] | None = None) -> Any:
        from shared.sql import sql

        text = str(getattr(statement, "text", statement))
        if text.lstrip().upper().startswith("SET "):
            await self.session.execute(statement, params or {})
        else:
            rows = (await self.session.execute(sql("EXPLAIN (ANALYZE, BUFFERS) " + text), params or {})).all()
            self.plans.append((text, [r[0] for r in rows]))
        return self

    def all(self) -> list[Any]:
        return []


def _plan_line(lines: list[str]) -> str:
    """The plan in one line: the nodes that read tables (with their index), then the execution time."""
    reads = []
    for line in lines:
        node = line.strip().removeprefix("->").strip()
        if " on " in node and ("Scan" in node or "Index" in node):
            reads.append(node.split("  (")[0])
    done = next((line for line in lines if line.startswith("Execution Time")), "")
    return f"{'; '.join(reads) or lines[0].split('  (')[0]}; {done.lower()}"


async def _explain(db_url: str, case_id: uuid.UUID) -> list[str]:
    """EXPLAIN ANALYZE of what each measured route runs, with the parameters it runs them with."""
    from services.dispatcher.audit.service import search
    from services.dispatcher.console.service import daily_compliance
    from services.dispatcher.reports import service as reports

    engine = make_engine(db_url, pool_size=1, application_name="shouhu-bench-explain", audit_key=bench_audit_key())
    out = []
    try:
        now = datetime.now(UTC)
        calls = (
            ("overview (GET /console, /v1/reports/overview)", lambda s: reports.overview(s, unit=UNIT, now=now)),
            ("daily compliance (GET /console)", lambda s: daily_compliance(s, unit=UNIT, now=now, days=7)),
            ("compliance (GET /v1/reports/compliance)",
             lambda s: reports.compliance(s, unit=UNIT, from_=now - timedelta(days=7), to=now)),
            ("audit search for one case (GET /v1/audit?case_id=)",
             lambda s: search(s, unit=UNIT, case_id=case_id)),
        )
        for label, call in calls:
            for _ in range(2):  # the second run's figures: the cache as warm as during the measurements
                async with make_sessionmaker(engine)() as session:
                    probe = _Explain(session)
                    await call(probe)
            for _, lines in probe.plans:
                out.append(f"{label}: {_plan_line(lines)}")
    finally:
        await engine.dispose()
    return out


async def bench_consoles(quick: bool) -> dict[str, float]:
    """The supervisor's overview, compliance and audit search at one million tasks, against a baseline."""
    from shared.auth.service import create_key

    plan = _Plan.of(quick)
    notes = [await machine_idle_note()]
    figures: dict[str, float] = {}
    async with bench_database() as db_url:
        now = datetime.now(UTC)
        loaded = await _load(db_url, plan.tasks, now)
        engine = make_engine(db_url, pool_size=1, application_name="shouhu-bench", audit_key=bench_audit_key())
        try:
            async with transaction(make_sessionmaker(engine)) as session:
                _, key = await create_key(session, role="supervisor", unit=UNIT, name="bench-consoles")
        finally:
            await engine.dispose()
        server = _Dispatcher(db_url, _free_ports(1)[0])
        async with server:
            port = server.port
            cookie = await _sign_in(port, key)
            kinds: list[_Kind] = [
                _Kind("healthz_baseline", ("/healthz",), marker=b'"ok"'),
                _Kind("api_baseline", (_audit_path(uuid.uuid4()),), key=key, marker=b'"items":[]'),
                _Kind("overview", ("/console",), cookie=cookie, marker=b'id="counts"'),
                _Kind("overview_api", (f"/v1/reports/overview?unit={UNIT}",), key=key, marker=b'"open_by_tier"'),
                _Kind("compliance", (f"/v1/reports/compliance?unit={UNIT}",), key=key, marker=b'"compliance_rate"'),
                _Kind("audit_case", tuple(_audit_path(c) for c in loaded.audit_cases), key=key,
                      marker=b'"case_id":"'),
            ]
            rng = random.Random(20261121)
            warm: dict[str, list[float]] = {}
            await _rounds(kinds, port, plan.warmup_rounds, rng, warm)
            sequential: dict[str, list[float]] = {}
            with ProcCpu({"dispatcher": server.pid}) as cpu_seq:
                await _rounds(kinds, port, plan.rounds, rng, sequential)
            concurrent: dict[str, list[float]] = {}
            with ProcCpu({"dispatcher": server.pid}) as cpu_conc:
                await asyncio.gather(*[
                    _rounds(kinds, port, plan.concurrent_rounds, random.Random(c), concurrent)
                    for c in range(CONCURRENT_CLIENTS)])
            explained = await _explain(db_url, loaded.audit_cases[0])
            chain = await _verify_chain(port, key)
        if server.errors:
            notes.append("dispatcher log errors (verbatim):")
            notes.extend(f"  {line[:400]}" for line in server.errors)

    base = _summary(sequential["api_baseline"])[1]
    for kind in kinds:
        p50, p95, _ = _summary(sequential[kind.name])
        figures[f"{kind.name}_p50_ms"] = round(p50, 2)
        figures[f"{kind.name}_p95_ms"] = round(p95, 2)
        if not kind.name.endswith("baseline"):
            figures[f"{kind.name}_ratio"] = round(p95 / base, 2)
    for kind in kinds:
        p95 = _summary(concurrent[kind.name])[1]
        figures[f"{kind.name}_c{CONCURRENT_CLIENTS}_p95_ms"] = round(p95, 2)
    figures["tasks_loaded"] = loaded.tasks
    figures["unit_tasks"] = loaded.unit_tasks
    figures["open_tasks"] = loaded.open_tasks
    figures["audit_rows"] = loaded.audit_rows
    figures["audit_chain_ok"] = 1.0 if chain[0] else 0.0

    width = 26
    print(f"{'figure':<{width}}{'n':>6}{'p50':>10}{'p95':>10}{'max':>10}  what (sequential, ms)")
    for kind in kinds:
        p50, p95, top = _summary(sequential[kind.name])
        print(f"{kind.name:<{width}}{len(sequential[kind.name]):>6}{p50:>10.1f}{p95:>10.1f}{top:>10.1f}"
              f"  GET {kind.paths[0] if len(kind.paths) == 1 else '/v1/audit?case_id=<one of ' + str(len(kind.paths)) + '>'}")
    print(f"{'':<{width}}{'n':>6}{'p50':>10}{'p95':>10}{'max':>10}  "
          f"({CONCURRENT_CLIENTS} clients at once, same mix)")
    for kind in kinds:
        p50, p95, top = _summary(concurrent[kind.name])
        print(f"{kind.name + '_c' + str(CONCURRENT_CLIENTS):<{width}}{len(concurrent[kind.name]):>6}"
              f"{p50:>10.1f}{p95:>10.1f}{top:>10.1f}")
    print(f"  ratios (p95 / api_baseline p95 {base:.1f} ms): "
          + ", ".join(f"{k}={v}" for k, v in figures.items() if k.endswith("_ratio")))
    print(f"  targets: overview_p95_ms < 300 ({figures['overview_p95_ms']}), compliance_p95_ms < 300"
          f" ({figures['compliance_p95_ms']}), audit_case_p95_ms < 50 ({figures['audit_case_p95_ms']})")
    print(f"  data: {loaded.tasks:,} tasks and cases loaded with SQL (generate_series), not through the HTTP API;"
          f" unit {UNIT}: {loaded.unit_tasks:,} tasks; open nationwide: {loaded.open_tasks:,};"
          f" audit_log: {loaded.audit_rows:,} entries (every task's), hash-chained and COPYed;"
          f" chain verified through GET /v1/audit/verify: {chain[1]}")
    print("  load seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in loaded.seconds.items()))
    for note in [*loaded.notes, *notes]:
        print(f"  {note}")
    print(f"  database server: {_describe(db_url)}; one dispatcher process (pid {server.pid}, port {port})")
    print(f"  CPU, sequential phase: {cpu_seq.result}")
    print(f"  CPU, concurrent phase: {cpu_conc.result}")
    print("  plans (EXPLAIN ANALYZE of the routes' statements after the measurements, the second of two runs):")
    for line in explained:
        print(f"    {line}")
    return figures


async def _verify_chain(port: int, key: str) -> tuple[bool, str]:
    """GET /v1/audit/verify: the loaded log must be one valid chain (as every entry the dispatcher adds)."""
    http = _Http(port, key)
    try:
        t0 = time.perf_counter()
        status, data = await asyncio.wait_for(http.request("GET", "/v1/audit/verify"), 600)
        seconds = time.perf_counter() - t0
    finally:
        http.close()
    if status != 200:
        raise BenchError(f"GET /v1/audit/verify: {_verbatim(status, data)}")
    answer = orjson.loads(data)
    return bool(answer["ok"]), f"{data.decode()} in {seconds:.1f} s"
