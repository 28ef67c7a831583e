"""`shouhu bench ingest`: how fast warnings get in, and how soon the first call job can be taken.

What is measured, in one run, against real dispatcher server processes and a
fresh database on the configured PostgreSQL server.

Replicas. The dispatcher is deployed as several replicas on one database
(docker-compose scales it with ``--scale dispatcher=N``; each replica is one
process, one uvicorn worker, and two processes on one database is a tested
configuration). The benchmark does the same: it starts N replicas, N from
``SHOUHU_BENCH_REPLICAS`` (default 2), each a separate ``shouhu serve
dispatcher`` subprocess on its own free port, all on the same bench database,
and spreads the client load over them. Why: on the 2-core machine this runs
on, a single dispatcher process is CPU-bound (~95% of one core) while
PostgreSQL uses only ~50-60% of the other, so one process cannot use the
machine and would measure a configuration nobody deploys. With
``SHOUHU_BENCH_REPLICAS=1`` the benchmark runs exactly as it did with one
process.

1. ``ingest_batch_per_s``: records/s accepted through POST /v1/warnings/batch,
   1,000 new records per request, 4 requests in flight in total, in-flight
   slots bound round-robin to the replicas (2 per replica with N=2). Records
   are realistic: unique source_refs, mostly-unique phones in several formats
   (~5% are a second warning about a phone earlier in the same request, so
   some merge into a case), several region codes, and a tier mix of ~20% high
   / 40% medium / 40% low, so every kind of plan (and so every kind of job) is
   made.
2. ``ingest_single_per_s``: records/s through POST /v1/warnings, one record per
   request, 32 clients on keep-alive connections spread evenly over the
   replicas (16 each with N=2), counted over a fixed window after a warm-up
   (the server's group commit is what this exercises).
3. ``first_job_p50_ms`` / ``first_job_p99_ms`` (the plain case): while the
   batched load of (1) runs on all replicas, a high-tier warning is sent every
   50 ms, round-robin to all replicas; a separate consumer (LISTEN on
   ``shouhu_jobs`` as a wake-up, a short poll as the fallback, claiming with
   ``shared.queue.service.claim``) takes everything on the ``callcenter``
   queue. ``first_job_p99_ms`` is what the issue names: from the warning's
   acceptance (the moment its 201 answer arrives) to the moment its
   ``call.auto`` job was claimed (after the claim committed); the job commits
   in the same transaction as the warning, so it is often claimed before the
   answer even arrives, which counts as 0. ``first_job_send_p99_ms`` is the
   stricter end-to-end figure, from just before the request was sent: it adds
   the dispatcher's own handling of the request under that load, which is what
   a person in the middle of a transfer waits in all before the phone can ring. ``first_job_load_per_s`` is the batched load's
   records/s during that phase (over the load's whole run, which spans the
   samples), so a reader sees what load the latency was measured under.
   ``first_job_bulkhead_p50_ms`` / ``first_job_bulkhead_p99_ms`` /
   ``first_job_bulkhead_load_per_s`` (only with N >= 2): the same, but the
   batched load goes to replicas 1..N-1 only (same total concurrency) and the
   samples to replica 0 only: a deployment that routes bulk feeds and
   real-time single warnings to different replicas of the same dispatcher, on
   the same database. The samples then no longer wait behind batch parsing in
   their process; what they still share with the load is PostgreSQL (and the
   machine's two cores).
4. ``ingest_baseline_per_s``: the same rows as (1) (each baseline run inserts
   exactly the records the batch run before it sent), inserted with plain
   batched INSERTs into a scratch table ``bench_baseline`` (LIKE warnings
   INCLUDING DEFAULTS, plus the same primary key and the same unique index on
   (source, source_ref) that ingest's deduplication relies on; no secondary
   indexes), through asyncpg, 1,000 rows per statement and per transaction,
   with the same total concurrency as (1). ``ingest_ratio`` = (1) / (4).

Why the baseline is fair: it runs in the same run, on the same database server
with the same settings (synchronous_commit included), the same driver, the
same statement shape (INSERT ... SELECT FROM unnest(...)), the same batch size,
the same commit granularity and the same concurrency, with the rows prepared
before timing. It leaves out exactly what the product adds on top of "write
the warning row": HTTP and JSON, validation and phone normalisation,
deduplication lookups, case locking and grading, and the case, task, job and
audit rows written in the same transaction. The ratio is therefore the share
of the raw write speed the whole ingest path keeps.

Where the time goes (docs/ingest-profile.md has the tables and how they were
measured): per batched record ~150 us of dispatcher CPU and ~145 us of
PostgreSQL against ~14 us for the baseline's row. PostgreSQL's share: the
cases+tasks+warnings statement ~50% (a quarter of it parsing the JSON
parameters, a fifth foreign-key checks), the jobs INSERT ~28% (1.9 jobs per
record), the audit staging row and its seal at COMMIT ~18%. The dispatcher's:
validation ~30%, planning and building jobs ~19%, SQLAlchemy+asyncpg ~15%. On
two cores both halves count alike, so the ratio moves only with both. Single
records pay a transaction's fixed cost (~1 ms of dispatcher CPU) per group.

Runs 1 and 4 are repeated (three times; once with --quick) and the median is
reported; a table of every figure (median, min, max) and of where the CPU went
(the client, each replica and their sum, PostgreSQL, the whole machine) is
printed, with a line saying how many replicas ran and on which ports; then the
figures are returned (``bench/__init__.py`` prints them as the last line with
--json). All traffic goes to 127.0.0.1; every loop is bounded in count and in
time; every replica is stopped and the database is dropped at the end, even on
error.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from services.dispatcher.warnings.schemas import FRAUD_TYPES
from shared.db import make_engine, make_sessionmaker, raw_connect, resolve_database_url, transaction, with_database
from shared.ids import uuid7
from shared.queue.service import NOTIFY_CHANNEL, claim
from shared.settings import CommonSettings

ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZE = 1000
# Batch requests in flight at once (also used for the baseline and for the
# first-job phase's load). Tried 2, 3 and 4 with full runs against PostgreSQL 15
# on 127.0.0.1:5432: medians 4,529 / 4,508 / 4,714 records/s. 4 was best, by a
# margin within the noise: the single dispatcher process is CPU-bound at
# 83-93% of its core throughout, so extra requests in flight only overlap its
# parsing with PostgreSQL's writing a little better.
BATCH_CONCURRENCY = 4
# The same, in total over all replicas, when two or more run (see _batch_concurrency). Tried 4 and 6 with
# 2 replicas, two full runs each, same PostgreSQL: batch medians 7,051 / 7,079 (4) vs 7,272 / 7,022 (6)
# records/s, the same within the noise (the machine is ~195% of 200% busy either way), but 6 doubled the plain
# first-job p99 (480 / 547 ms with 4, 939 / 904 ms with 6): more work queued ahead of each sample on its
# replica. So 4 (2 per replica).
BATCH_CONCURRENCY_REPLICAS = 4
DEFAULT_REPLICAS = 2  # SHOUHU_BENCH_REPLICAS overrides
SINGLE_CLIENTS = 32
SAMPLE_INTERVAL_S = 0.05
CLAIM_LIMIT = 500
CONSUMER_POLL_S = 0.1  # the fallback when a NOTIFY is missed; NOTIFY normally wakes the consumer first
REGIONS = ("330106", "330102", "330110", "320102", "330105", "330108", "320105", "310101")
SOURCES = ("bank-icbc-zj", "bank-abc-js", "telecom-cm-zj", "app-guard", "police-96110")
# Valid Chinese mobile prefixes; with an 8-digit counter after them every phone is new.
PHONE_PREFIXES = ("138", "139", "135", "136", "137", "150", "151", "152", "186", "187", "188", "158")
HIGH_SIGNALS = ("transfer_in_progress", "transfer_to_flagged_account", "remote_control_app", "screen_sharing")
MEDIUM_SIGNALS = ("fraud_call_received", "fraud_app_installed", "fraud_site_visited")
LOW_SIGNALS = ("fraud_sms_received", "other")
CALM_FRAUD_TYPES = tuple(f for f in FRAUD_TYPES if f != "impersonating_police")  # no rule lifts these
DEADLINE_MIN = {"high": 120, "medium": 1440, "low": 4320}
CST = timezone(timedelta(hours=8))


def _replicas_from_env() -> int:
    raw = os.environ.get("SHOUHU_BENCH_REPLICAS", "").strip()
    if not raw:
        return DEFAULT_REPLICAS
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"SHOUHU_BENCH_REPLICAS must be a whole number >= 1, not {raw!r}") from None
    if not 1 <= n <= 16:
        raise ValueError(f"SHOUHU_BENCH_REPLICAS must be between 1 and 16, not {n}")
    return n


def _batch_concurrency(replicas: int) -> int:
    """Total batch requests in flight; at least one per replica, so every replica gets load."""
    return max(BATCH_CONCURRENCY if replicas == 1 else BATCH_CONCURRENCY_REPLICAS, replicas)


@dataclass(frozen=True)
class _Plan:
    batch_runs: int
    batch_requests: int  # per run
    batch_run_max_s: float
    single_warmup_s: float
    single_s: float
    samples: int
    phase3_requests: int

    @classmethod
    def of(cls, quick: bool) -> _Plan:
        if quick:
            return cls(batch_runs=1, batch_requests=12, batch_run_max_s=12, single_warmup_s=1, single_s=3,
                       samples=40, phase3_requests=40)
        return cls(batch_runs=3, batch_requests=40, batch_run_max_s=20, single_warmup_s=2, single_s=10,
                   samples=100, phase3_requests=110)


# ---- records --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Row:
    """One generated record: what goes on the wire, and what the baseline needs to store the same row."""

    wire: dict[str, Any]
    e164: str
    tier: str
    occurred_at: datetime


class _Records:
    """Realistic warning records, every phone and source_ref new for the whole run."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tag = secrets.token_hex(3)
        self.n = 0

    def _phone(self) -> str:
        self.n += 1
        return PHONE_PREFIXES[self.n % len(PHONE_PREFIXES)] + f"{self.n:08d}"

    def one(self, tier: str | None = None, *, digits: str | None = None, now: datetime | None = None) -> _Row:
        rng = self.rng
        if tier is None:
            roll = rng.random()
            tier = "high" if roll < 0.2 else "medium" if roll < 0.6 else "low"
        digits = digits or self._phone()
        self.n += 1
        amount: float | None = round(rng.uniform(100, 49_000), 2) if rng.random() < 0.6 else None
        score: int | None = rng.randint(10, 79) if rng.random() < 0.5 else None
        age: int | None = rng.randint(18, 64) if rng.random() < 0.5 else None
        fraud = rng.choice(CALM_FRAUD_TYPES)
        if tier == "high":
            pick = rng.random()
            if pick < 0.75:
                signal = rng.choice(HIGH_SIGNALS)
                age = rng.randint(18, 85) if age is not None else None
            elif pick < 0.9:
                signal, fraud = rng.choice(MEDIUM_SIGNALS), "impersonating_police"
            else:
                signal, amount = rng.choice(MEDIUM_SIGNALS), round(rng.uniform(50_000, 900_000), 2)
        elif tier == "medium":
            if rng.random() < 0.85:
                signal = rng.choice(MEDIUM_SIGNALS)
            else:
                signal, score = rng.choice(LOW_SIGNALS), rng.randint(80, 99)
        else:
            signal = rng.choice(LOW_SIGNALS)
        now = now or datetime.now(UTC)
        occurred = (now - timedelta(seconds=rng.randint(5, 900))).astimezone(CST).replace(microsecond=0)
        style = self.n % 3
        phone = digits if style == 0 else (f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}" if style == 1
                                           else f"{digits[:3]}-{digits[3:7]}-{digits[7:]}")
        wire: dict[str, Any] = {
            "source": SOURCES[self.n % len(SOURCES)],
            "source_ref": f"bench-{self.tag}-{self.n}",
            "phone": phone,
            "fraud_type": fraud,
            "signal": signal,
            "region_code": REGIONS[(self.n * 7) % len(REGIONS)],
            "occurred_at": occurred.isoformat(),
        }
        if amount is not None:
            wire["amount_at_risk"] = amount
        if score is not None:
            wire["risk_score"] = score
        if age is not None:
            wire["subject"] = {"name": "张某", "age": age, "gender": rng.choice(("male", "female"))}
        if rng.random() < 0.5:
            wire["details"] = {"counterparty_account": f"6222****{rng.randint(1000, 9999)}", "channel": "mobile"}
        return _Row(wire, "+86" + digits, tier, occurred)

    def batch(self, size: int = BATCH_SIZE) -> list[_Row]:
        """`size` records; ~5% repeat a phone from earlier in the same request (a second warning, merged)."""
        now = datetime.now(UTC)
        rows: list[_Row] = []
        for _ in range(size):
            digits = None
            if rows and self.rng.random() < 0.05:
                digits = self.rng.choice(rows).e164[3:]
            rows.append(self.one(digits=digits, now=now))
        return rows


def _body(rows: list[_Row]) -> bytes:
    return orjson.dumps({"warnings": [r.wire for r in rows]})


# ---- a minimal HTTP/1.1 keep-alive client --------------------------------------------------------------
# Raw asyncio streams rather than aiohttp: the client shares two cores with the
# server and PostgreSQL, so it must cost as little CPU per request as possible.
# How we checked the client is not the bottleneck: every phase reports the
# bench process's own CPU (time.process_time) next to the dispatcher's
# (/proc/<pid>/stat). In the single-record window of a full run the client used
# 7% of a core while the one dispatcher process used 96% of its core: the
# server, not the client, sets the pace (and there was idle CPU left on the
# machine, 130% of 200% busy).


class _Http:
    def __init__(self, port: int, key: str | None = None) -> None:
        self.port = port
        self.auth = f"Authorization: Bearer {key}\r\n" if key else ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_head = b""

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        for attempt in (1, 2):
            fresh = self.writer is None
            if fresh:
                await self.open()
            try:
                return await self._exchange(method, path, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                # A keep-alive connection the server closed while idle: reconnect once.
                self.close()
                if fresh or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{self.auth}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        if len(body) < 16_384:
            self.writer.write(head + body)
        else:
            self.writer.write(head)
            self.writer.write(body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        self.last_head = raw  # the status line and headers of the last answer (bench/faults.py reads Retry-After)
        status = int(raw[9:12])
        length: int | None = None
        chunked = close = False
        for line in raw.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            data = b"".join(parts)
        elif length is not None:
            data = await self.reader.readexactly(length)
        else:
            data = await self.reader.read()
            close = True
        if close:
            self.close()
        return status, data


class BenchError(RuntimeError):
    """A benchmark could not run as designed (a server failed, an answer was wrong): its figures would be wrong."""


class DispatcherError(BenchError):
    """The dispatcher answered with an error (5xx) or rejected a record: the figures would be wrong."""


def _verbatim(status: int, data: bytes) -> str:
    return f"HTTP {status}: {data[:2000].decode(errors='replace')}"


# ---- CPU accounting (to show who the bottleneck is) ----------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of every PostgreSQL process, by pid (backends come and go, so deltas are taken per pid)."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue
            if "(postgres)" in text:
                fields = text.rsplit(")", 1)[1].split()
                found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICK
    return found


def _postgres_delta(before: dict[int, float], after: dict[int, float]) -> float:
    # A backend that exited during the window is lost (an undercount); a new one counts from zero.
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _machine_busy() -> tuple[float, float]:
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts) - idle) / _TICK, sum(parts) / _TICK


@dataclass
class _Cpu:
    """CPU of the client, of each dispatcher replica (and their sum), of PostgreSQL and of the machine."""

    server_pids: list[int]
    start: tuple[float, float, list[float], dict[int, float], float, float] = (0, 0, [], {}, 0, 0)

    def __enter__(self) -> _Cpu:
        busy, total = _machine_busy()
        self.start = (time.perf_counter(), time.process_time(), [_proc_cpu(p) for p in self.server_pids],
                      _postgres_cpu(), busy, total)
        self.result = ""
        return self

    def __exit__(self, *_exc: object) -> None:
        busy, total = _machine_busy()
        wall0, client0, servers0, pg0, busy0, total0 = self.start
        wall = time.perf_counter() - wall0
        ncpu = os.cpu_count() or 1
        shares = [100 * (_proc_cpu(p) - c0) / wall for p, c0 in zip(self.server_pids, servers0, strict=True)]
        if len(shares) == 1:
            dispatcher = f"dispatcher {shares[0]:.0f}%"
        else:
            dispatcher = (f"dispatcher replicas {' + '.join(f'r{i} {v:.0f}%' for i, v in enumerate(shares))}"
                          f" = {sum(shares):.0f}%")
        self.result = (
            f"client {100 * (time.process_time() - client0) / wall:.0f}%, "
            f"{dispatcher}, "
            f"postgres ~{100 * _postgres_delta(pg0, _postgres_cpu()) / wall:.0f}% (of one core); "
            f"machine {100 * ncpu * (busy - busy0) / max(total - total0, 1e-9):.0f}% of {100 * ncpu}%"
        )


# ---- the dispatcher server process ---------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """`count` distinct free ports (all sockets held open until every port is picked)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            socks.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


async def wait_until_ready(server: Any, *, timeout_s: float, pause_s: float,
                           error: type[Exception]) -> float:
    """Seconds until `server.ready_path` answers 200 on `server.port`; `error` if its process exits or time runs out.

    `server` is a bench's process wrapper: `name`, `proc` (a Popen), `port`, `ready_path` and `log_tail()`.
    """
    t0 = time.monotonic()
    last = "no answer"
    while time.monotonic() - t0 < timeout_s:
        if server.proc is None or server.proc.poll() is not None:
            code = server.proc.returncode if server.proc is not None else None
            raise error(f"the {server.name} exited with {code}:\n{server.log_tail()}")
        http = _Http(server.port)
        try:
            status, data = await asyncio.wait_for(http.request("GET", server.ready_path), 5)
            if status == 200:
                return time.monotonic() - t0
            last = _verbatim(status, data)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            last = repr(exc)
        finally:
            http.close()
        await asyncio.sleep(pause_s)
    raise error(f"the {server.name} was not ready after {timeout_s:.0f} s ({last}):\n{server.log_tail()}")


def error_lines_of(log_text: str, limit: int) -> list[str]:
    """A server log's error lines (structlog JSON levels, tracebacks, uvicorn's ERROR), the first `limit`."""
    found = [line for line in log_text.splitlines()
             if '"error"' in line or '"critical"' in line or "Traceback" in line or "ERROR" in line]
    return found[:limit]


class ServerProcess:
    """`shouhu <args>` as a subprocess, its output in a temporary log, ready when `ready_path` answers 200."""

    def __init__(self, name: str, args: list[str], port: int, env: dict[str, str], ready_path: str) -> None:
        self.name = name
        self.args = args
        self.port = port
        self.env = env
        self.ready_path = ready_path
        # Closed in __aexit__ (the server's output goes there for its whole life).
        self.log = tempfile.NamedTemporaryFile(prefix=f"shouhu-bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | None = None
        self.errors: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def spawn(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "shouhu.cli", *self.args, "--port", str(self.port)],
                                     env=self.env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        assert self.proc is not None
        await wait_until_ready(self, timeout_s=timeout_s, pause_s=0.2, error=BenchError)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def error_lines(self, limit: int = 10) -> list[str]:
        return error_lines_of(Path(self.log.name).read_text(errors="replace"), limit)

    async def __aenter__(self) -> ServerProcess:
        self.spawn()
        try:
            await self.wait_ready(60.0)
        except BaseException as exc:
            await self.__aexit__(type(exc))
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None = None, *_exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 5)
        self.log.close()
        self.errors = self.error_lines()
        if exc_type is not None:  # the benchmark failed: show what the server said, verbatim
            print(f"{self.name} (port {self.port}) log (last lines):\n{self.log_tail()}", file=sys.stderr)
        Path(self.log.name).unlink(missing_ok=True)


@dataclass
class ProcCpu:
    """CPU of this client, of each named server process, of PostgreSQL and of the machine, over a `with` block.

    PostgreSQL's backends are sampled every 0.2 s while the block runs (not only at its ends, as the ingest
    bench does): a connection pool closes its overflow connections as the load drops at the end of a phase, and
    a backend gone by the end would otherwise take all of its CPU with it. At most the last 0.2 s of each
    exited backend is lost.
    """

    procs: dict[str, int]
    start: tuple[float, float, dict[str, float], dict[int, float], float, float] = (0, 0, {}, {}, 0, 0)
    result: str = ""
    pg_seen: dict[int, float] = field(default_factory=dict)
    _sampler: asyncio.Task[None] | None = None

    def __enter__(self) -> ProcCpu:
        busy, total = _machine_busy()
        pg = _postgres_cpu()
        self.pg_seen = dict(pg)
        self.start = (time.perf_counter(), time.process_time(), {n: _proc_cpu(p) for n, p in self.procs.items()},
                      pg, busy, total)
        self._sampler = asyncio.get_running_loop().create_task(self._sample())
        return self

    def _merge(self, found: dict[int, float]) -> None:
        for pid, cpu in found.items():
            self.pg_seen[pid] = max(cpu, self.pg_seen.get(pid, 0.0))

    async def _sample(self) -> None:
        for _ in range(100_000):  # bounded; cancelled when the block ends
            await asyncio.sleep(0.2)
            self._merge(_postgres_cpu())

    def __exit__(self, *_exc: object) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
        busy, total = _machine_busy()
        final = _postgres_cpu()
        self._merge(final)
        wall0, client0, procs0, pg0, busy0, total0 = self.start
        wall = max(time.perf_counter() - wall0, 1e-9)
        ncpu = os.cpu_count() or 1
        exited = sum(1 for pid in self.pg_seen if pid not in final)
        servers = ", ".join(f"{n} {100 * (_proc_cpu(p) - procs0[n]) / wall:.0f}%" for n, p in self.procs.items())
        self.result = (f"client {100 * (time.process_time() - client0) / wall:.0f}%, {servers}, "
                       f"postgres ~{100 * _postgres_delta(pg0, self.pg_seen) / wall:.0f}%"
                       f" (of one core; {exited} backends exited during it); "
                       f"machine {100 * ncpu * (busy - busy0) / max(total - total0, 1e-9):.0f}% of {100 * ncpu}%"
                       f" over {wall:.1f} s")


class _Dispatcher(ServerProcess):
    """`shouhu serve dispatcher` as a subprocess: one process, one uvicorn worker, as in production."""

    def __init__(self, db_url: str, port: int, replica: int = 0) -> None:
        env = {**os.environ, "DATABASE_URL": db_url, "SHOUHU_LOG_LEVEL": "WARNING", "SHOUHU_DISPATCHER_WORKER": "true"}
        super().__init__(f"dispatcher replica {replica}", ["serve", "dispatcher"], port, env, "/readyz")
        self.db_url = db_url
        self.replica = replica

    async def _wait_ready(self, timeout_s: float) -> None:
        await self.wait_ready(timeout_s)


class _Replicas:
    """N dispatcher replicas on one database, each its own process on its own port (as docker-compose scales it).

    All are spawned first and then awaited, so start-up overlaps; all are stopped on the way out, even on error.
    """

    def __init__(self, db_url: str, count: int) -> None:
        self.servers = [_Dispatcher(db_url, port, i) for i, port in enumerate(_free_ports(count))]
        self._stack = AsyncExitStack()

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    @property
    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.servers if s.proc is not None]

    @property
    def errors(self) -> list[str]:
        return [f"r{s.replica}: {line}" for s in self.servers for line in s.errors]

    async def __aenter__(self) -> _Replicas:
        try:
            for server in self.servers:
                self._stack.push_async_exit(server.__aexit__)
                server.spawn()
            await _run_all([server._wait_ready(60.0) for server in self.servers])
        except BaseException as exc:
            await self._stack.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stack.__aexit__(*exc)


# ---- phases --------------------------------------------------------------------------------------------


@dataclass
class _Report:
    rows: list[tuple[str, int, float, float, float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, values: list[float], unit: str) -> float:
        median = statistics.median(values)
        self.rows.append((name, len(values), median, min(values), max(values), unit))
        return median

    def print(self) -> None:
        width = max([24] + [len(row[0]) + 2 for row in self.rows])
        print(f"{'phase':<{width}}{'runs':>6}{'median':>12}{'min':>12}{'max':>12}  unit")
        for name, runs, median, low, high, unit in self.rows:
            fmt = ".3f" if abs(median) < 10 else ".1f"
            print(f"{name:<{width}}{runs:>6}{median:>12{fmt}}{low:>12{fmt}}{high:>12{fmt}}  {unit}")
        for note in self.notes:
            print(f"  {note}")


async def _run_all(coros: list[Awaitable[None]]) -> None:
    """Run together; on the first failure cancel the rest (no request outlives a failed phase)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _post_batches(ports: list[int], key: str, bodies: list[bytes], *, concurrency: int, max_s: float,
                        stop: asyncio.Event | None = None) -> tuple[int, float, int]:
    """Send the bodies with `concurrency` requests in flight; return (accepted, seconds, requests sent).

    In-flight slot i sends to replica ports[i % len(ports)] (round-robin over the replicas; with 4 slots and 2
    replicas, 2 requests are in flight on each at all times). There is at least one slot per replica.
    """
    queue = list(reversed(bodies))
    accepted = 0
    sent = 0
    deadline = time.perf_counter() + max_s

    async def worker(port: int) -> None:
        nonlocal accepted, sent
        http = _Http(port, key)
        try:
            while queue and time.perf_counter() < deadline and not (stop and stop.is_set()):
                body = queue.pop()
                sent += 1
                status, data = await http.request("POST", "/v1/warnings/batch", body)
                if status != 200:
                    raise DispatcherError(f"POST /v1/warnings/batch answered {_verbatim(status, data)}")
                answer = orjson.loads(data)
                if answer["rejected"] or answer["duplicates"]:
                    bad = [r for r in answer["results"] if r["status"] != "accepted"][:3]
                    raise DispatcherError(f"batch: {answer['rejected']} rejected, {answer['duplicates']} duplicates;"
                                          f" first: {orjson.dumps(bad).decode()}")
                accepted += answer["accepted"]
        finally:
            http.close()

    start = time.perf_counter()
    await _run_all([worker(ports[i % len(ports)]) for i in range(max(concurrency, len(ports)))])
    return accepted, time.perf_counter() - start, sent


_BASELINE_SQL = (
    "INSERT INTO bench_baseline (id, source, source_ref, received_at, occurred_at, phone, fraud_type, signal,"
    " region_code, amount_at_risk, risk_score, subject, details, case_id, task_id, tier, due_at, reasons, merged,"
    " notices, ingested_by)"
    " SELECT id, source, ref, received, occurred, phone, fraud, signal, region, amount, score, subject::jsonb,"
    " details::jsonb, case_id, task_id, tier, due, reasons::jsonb, merged, notices::jsonb, actor"
    " FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[],"
    " $8::text[], $9::text[], $10::numeric[], $11::smallint[], $12::text[], $13::text[], $14::uuid[], $15::uuid[],"
    " $16::text[], $17::timestamptz[], $18::text[], $19::bool[], $20::text[], $21::text[])"
    " AS u(id, source, ref, received, occurred, phone, fraud, signal, region, amount, score, subject, details,"
    " case_id, task_id, tier, due, reasons, merged, notices, actor)"
)


def _baseline_args(rows: list[_Row], actor: str) -> list[list[Any]]:
    """The same rows as the API stored, as column arrays (built before timing)."""
    now = datetime.now(UTC)
    cols: list[list[Any]] = [[] for _ in range(21)]
    for row in rows:
        w = row.wire
        amount = w.get("amount_at_risk")
        reasons = [{"rule": "signal", "effect": row.tier, "why": f"signal {w['signal']} suggests {row.tier}"}]
        values = (
            uuid7(), w["source"], w["source_ref"], now, row.occurred_at, row.e164, w["fraud_type"], w["signal"],
            w["region_code"], Decimal(str(amount)) if amount is not None else None, w.get("risk_score"),
            orjson.dumps(w["subject"]).decode() if "subject" in w else None,
            orjson.dumps(w["details"]).decode() if "details" in w else None,
            uuid7(), uuid7(), row.tier, now + timedelta(minutes=DEADLINE_MIN[row.tier]),
            orjson.dumps(reasons).decode(), False, None, actor,
        )
        for col, value in zip(cols, values, strict=True):
            col.append(value)
    return cols


async def _baseline_run(conns: list[Any], batches: list[list[list[Any]]]) -> tuple[int, float]:
    queue = list(reversed(batches))
    inserted = 0

    async def worker(conn: Any) -> None:
        nonlocal inserted
        while queue:
            args = queue.pop()
            await conn.execute(_BASELINE_SQL, *args)  # autocommit: one transaction per 1,000 rows, like ingest
            inserted += len(args[0])

    start = time.perf_counter()
    await _run_all([worker(c) for c in conns])
    return inserted, time.perf_counter() - start


async def _single_phase(ports: list[int], key: str, gen: _Records, *, warmup_s: float, measure_s: float,
                        server_pids: list[int]) -> tuple[float, str, int]:
    """32 clients (spread evenly over the replicas), one record per request; count 201s inside the window only."""
    done = 0
    errors: list[str] = []
    stop_at = time.perf_counter() + warmup_s + measure_s + 0.5  # a hard stop even if something hangs
    finished = asyncio.Event()

    async def client(port: int) -> None:
        nonlocal done
        http = _Http(port, key)
        try:
            for _ in range(1_000_000):
                if finished.is_set() or time.perf_counter() > stop_at:
                    return
                status, data = await http.request("POST", "/v1/warnings", orjson.dumps(gen.one().wire))
                if status == 201:
                    done += 1
                else:
                    errors.append(_verbatim(status, data))
                    if status >= 500 or len(errors) > 20:
                        return
        finally:
            http.close()

    clients = [asyncio.create_task(client(ports[i % len(ports)])) for i in range(SINGLE_CLIENTS)]
    try:
        await asyncio.sleep(warmup_s)
        with _Cpu(server_pids) as cpu:
            count0, t0 = done, time.perf_counter()
            await asyncio.sleep(measure_s)
            count1, t1 = done, time.perf_counter()
        finished.set()
        await asyncio.wait_for(asyncio.gather(*clients), timeout=30)
    finally:
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
    if errors:
        raise DispatcherError(f"POST /v1/warnings: {len(errors)} error answers; first: {errors[0]}")
    return (count1 - count0) / (t1 - t0), cpu.result, count1 - count0


class _Consumer:
    """A stand-in for the callcenter: LISTEN as the wake-up, a short poll as the fallback, `claim()` to take."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.engine = make_engine(db_url, pool_size=1, application_name="shouhu-bench-consumer",
                                  audit_key=bench_audit_key())
        self.sessionmaker = make_sessionmaker(self.engine)
        self.claimed_at: dict[str, float] = {}
        self.wake = asyncio.Event()
        self.idle = asyncio.Event()
        self.stopping = asyncio.Event()
        self.claims = 0
        self.jobs = 0
        self.notifies = 0

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload == "callcenter":
            self.notifies += 1
            self.wake.set()

    async def run(self, max_s: float) -> None:
        listener = await raw_connect(self.db_url)
        await listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
        deadline = time.perf_counter() + max_s
        try:
            while not self.stopping.is_set() and time.perf_counter() < deadline:
                self.wake.clear()  # before claiming, so a NOTIFY arriving during the claim is not lost
                async with transaction(self.sessionmaker) as session:
                    jobs = await claim(session, queue="callcenter", worker="bench-consumer",
                                       now=datetime.now(UTC), lease_s=900, limit=CLAIM_LIMIT)
                at = time.perf_counter()  # after the commit: the job is now this consumer's
                self.claims += 1
                self.jobs += len(jobs)
                for job in jobs:
                    if job.kind == "call.auto":
                        self.claimed_at.setdefault(str(job.payload.get("task_id")), at)
                if len(jobs) >= CLAIM_LIMIT:
                    continue  # more is waiting: no need to sleep
                if not jobs:
                    self.idle.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=CONSUMER_POLL_S)
        finally:
            await listener.close()
            await self.engine.dispose()


def _percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (with 100 samples, p99 is the second-worst)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * pct // 100)))
    return ordered[int(rank) - 1]


@dataclass
class _FirstJob:
    latencies: list[float]  # from the 201 answer (acceptance) to the claim; 0 when claimed before the answer arrived
    send_latencies: list[float]  # from just before the request was sent to the claim (end to end)
    note: str
    missing: int
    load_ran_throughout: bool
    load_per_s: float  # the background batch load's records/s over its whole run (which spans the samples)


async def _first_job_phase(load_ports: list[int], sample_ports: list[int], key: str, db_url: str, gen: _Records,
                           plan: _Plan, server_pids: list[int], concurrency: int) -> _FirstJob:
    """Batched load on `load_ports` (round-robin); high-tier samples sent round-robin to `sample_ports`."""
    consumer = _Consumer(db_url)
    consumer_task = asyncio.create_task(consumer.run(max_s=180))
    load: asyncio.Task[tuple[int, float, int]] | None = None
    pools: dict[int, list[_Http]] = {port: [] for port in sample_ports}
    try:
        # Drain the backlog the earlier phases left on the queue, so samples queue only behind this phase's load.
        idle = asyncio.create_task(consumer.idle.wait())
        await asyncio.wait([idle, consumer_task], timeout=90, return_when=asyncio.FIRST_COMPLETED)
        idle.cancel()
        if consumer_task.done():
            consumer_task.result()  # raises the consumer's error
            raise RuntimeError("the consumer stopped before the queue was drained")
        if not consumer.idle.is_set():
            raise RuntimeError("the consumer did not drain the callcenter queue within 90 s")
        bodies = [_body(gen.batch()) for _ in range(plan.phase3_requests)]
        stop_load = asyncio.Event()
        load = asyncio.create_task(_post_batches(load_ports, key, bodies, concurrency=concurrency, max_s=60,
                                                 stop=stop_load))
        await asyncio.sleep(1.0)  # let the load reach a steady state first
        sent_at: dict[str, float] = {}
        accepted_at: dict[str, float] = {}
        answer_ms: list[float] = []
        errors: list[str] = []

        async def sample(port: int) -> None:
            pool = pools[port]
            http = pool.pop() if pool else _Http(port, key)
            body = orjson.dumps(gen.one("high").wire | {"signal": "transfer_in_progress"})
            try:
                t0 = time.perf_counter()
                status, data = await http.request("POST", "/v1/warnings", body)
            except BaseException:
                http.close()
                raise
            t1 = time.perf_counter()
            answer_ms.append((t1 - t0) * 1000)
            pool.append(http)
            if status != 201:
                errors.append(_verbatim(status, data))
                return
            task_id = orjson.loads(data)["task_id"]
            sent_at[task_id] = t0
            accepted_at[task_id] = t1

        with _Cpu(server_pids) as cpu:
            start = time.perf_counter()
            tasks = []
            for k in range(plan.samples):
                await asyncio.sleep(max(0.0, start + k * SAMPLE_INTERVAL_S - time.perf_counter()))
                tasks.append(asyncio.create_task(sample(sample_ports[k % len(sample_ports)])))
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
            load_ran_throughout = not load.done()
        # Give the last samples' jobs time to be claimed (bounded).
        for _ in range(100):
            if all(t in consumer.claimed_at for t in sent_at):
                break
            await asyncio.sleep(0.1)
        stop_load.set()
        accepted, load_s, _ = await asyncio.wait_for(load, timeout=60)
        if errors:
            raise DispatcherError(f"high-tier samples: {len(errors)} error answers; first: {errors[0]}")
        send_latencies = [(consumer.claimed_at[t] - s) * 1000 for t, s in sent_at.items() if t in consumer.claimed_at]
        # The job commits with the warning, so it is often claimed before the 201 even reaches the client: 0 then.
        latencies = [max(0.0, (consumer.claimed_at[t] - a) * 1000) for t, a in accepted_at.items()
                     if t in consumer.claimed_at]
        missing = len(sent_at) - len(latencies)
        # Where the time goes: the HTTP answer (the record committed, jobs enqueued) vs the claim after it.
        note = (f"{cpu.result}; the samples' own POST answers took p50 {_percentile(answer_ms, 50):.0f} ms,"
                f" p99 {_percentile(answer_ms, 99):.0f} ms; background load {accepted} records in {load_s:.1f} s;"
                f" consumer {consumer.claims} claims, {consumer.jobs} jobs, {consumer.notifies} notifies")
        return _FirstJob(latencies, send_latencies, note, missing, load_ran_throughout, accepted / load_s)
    finally:
        for pool in pools.values():
            for http in pool:
                http.close()
        if load is not None and not load.done():
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
        consumer.stopping.set()
        consumer.wake.set()
        await asyncio.gather(consumer_task, return_exceptions=True)


# ---- the benchmark -------------------------------------------------------------------------------------


async def _with_admin(server_url: str, fn: Callable[[Any], Awaitable[None]]) -> None:
    admin = await raw_connect(server_url)
    try:
        await fn(admin)
    finally:
        await admin.close()


async def machine_idle_note() -> str:
    """How busy the machine was in the second before the run: other processes skew every figure."""
    busy0, total0 = _machine_busy()
    await asyncio.sleep(1.0)
    busy1, total1 = _machine_busy()
    ncpu = os.cpu_count() or 1
    return (f"machine busy before the run (other processes): "
            f"{100 * ncpu * (busy1 - busy0) / max(total1 - total0, 1e-9):.0f}% of {100 * ncpu}%")


def bench_audit_key() -> str:
    """The audit key of this run (the services the benchmarks start read the same settings)."""
    return CommonSettings().audit_secret()


@asynccontextmanager
async def bench_database() -> AsyncIterator[str]:
    """A fresh, migrated database on the configured server (embedded when DATABASE_URL is unset), dropped after."""
    from shared.migrate import migrate

    settings = CommonSettings()
    server_url = resolve_database_url(settings.database_url, settings.data_dir)
    name = f"shouhu_bench_{secrets.token_hex(6)}"
    await _with_admin(server_url, lambda a: a.execute(f'CREATE DATABASE "{name}"'))
    try:
        db_url = with_database(server_url, name)
        await migrate(db_url, audit_key=settings.audit_secret(), service_password=settings.service_password())
        yield db_url
    finally:
        await _with_admin(server_url, lambda a: a.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))



async def bench_ingest(quick: bool) -> dict[str, float]:
    """Ingest throughput (batched, single, plain-INSERT baseline) and time to the first call job."""
    from shared.auth.service import create_key

    replicas = _replicas_from_env()
    plan = _Plan.of(quick)
    report = _Report()
    report.notes.append(await machine_idle_note())
    async with bench_database() as db_url:
        engine = make_engine(db_url, pool_size=1, application_name="shouhu-bench", audit_key=bench_audit_key())
        try:
            async with transaction(make_sessionmaker(engine)) as session:
                api_key, key = await create_key(session, role="ingest", unit="", name="bench")
            actor = f"key:{api_key.key_id}:bench"  # as the API records it (Principal.actor)
        finally:
            await engine.dispose()
        servers = _Replicas(db_url, replicas)
        async with servers:
            figures = await _measure(servers, key, db_url, actor, plan, report)
        if servers.errors:
            report.notes.append("dispatcher log errors (verbatim):")
            report.notes.extend(f"  {line[:400]}" for line in servers.errors)
    report.print()
    return figures


async def _measure(servers: _Replicas, key: str, db_url: str, actor: str, plan: _Plan,
                   report: _Report) -> dict[str, float]:
    pids, ports = servers.pids, servers.ports
    n = len(ports)
    conc = _batch_concurrency(n)
    gen = _Records(seed=20261121)
    def per(total: int) -> str:
        return f"{total // n}" if total % n == 0 else f"{total // n}-{total // n + 1}"

    if n == 1:
        shape = (f"dispatcher: 1 replica ran (one process) on port {ports[0]} (pid {pids[0]}); batch concurrency"
                 f" {conc}, {BATCH_SIZE} records/request; single-record clients {SINGLE_CLIENTS}")
    else:
        shape = (f"dispatcher: {n} replicas ran (one process each, one database) on ports {', '.join(map(str, ports))}"
                 f" (pids {', '.join(map(str, pids))}); batch concurrency {conc} in total ({per(conc)} per replica),"
                 f" {BATCH_SIZE} records/request; single-record clients {SINGLE_CLIENTS}"
                 f" ({per(SINGLE_CLIENTS)} per replica)")
    report.notes.append(f"database server: {_describe(db_url)}; {shape}")

    # Warm up every replica (imports, pools, prepared statements, policy cache) and the baseline table.
    await _post_batches(ports, key, [_body(gen.batch()) for _ in range(2 * conc)], concurrency=conc, max_s=30)
    conns = [await raw_connect(db_url) for _ in range(conc)]
    try:
        await conns[0].execute(
            "CREATE TABLE bench_baseline (LIKE warnings INCLUDING DEFAULTS);"
            " ALTER TABLE bench_baseline ADD PRIMARY KEY (id);"
            " CREATE UNIQUE INDEX ux_bench_baseline_source_ref ON bench_baseline (source, source_ref);")
        await _baseline_run(conns, [_baseline_args(gen.batch(), actor) for _ in range(conc)])

        # 1 and 4, interleaved so both see the same machine and table sizes; each baseline run stores the
        # very records the batch run before it sent.
        batch_rates: list[float] = []
        base_rates: list[float] = []
        batch_cpu = base_cpu = ""
        for _ in range(plan.batch_runs):
            runs = [gen.batch() for _ in range(plan.batch_requests)]
            bodies = [_body(rows) for rows in runs]
            with _Cpu(pids) as cpu:
                accepted, seconds, sent = await _post_batches(ports, key, bodies, concurrency=conc,
                                                              max_s=plan.batch_run_max_s)
            batch_cpu = cpu.result
            batch_rates.append(accepted / seconds)
            if sent < len(bodies):
                report.notes.append(f"batch run hit its {plan.batch_run_max_s:.0f} s limit after {sent} requests")
            del bodies
            args = [_baseline_args(rows, actor) for rows in runs[:sent]]
            with _Cpu(pids) as cpu:
                inserted, seconds = await _baseline_run(conns, args)
            base_cpu = cpu.result
            base_rates.append(inserted / seconds)
    finally:
        for conn in conns:
            await conn.close()

    # 2. Single records, 32 clients spread evenly over the replicas.
    single_rate, single_cpu, single_n = await _single_phase(ports, key, gen, warmup_s=plan.single_warmup_s,
                                                            measure_s=plan.single_s, server_pids=pids)

    # 3. Time to the first call job, under batched load: the plain case (load and samples on every replica) ...
    plain = await _first_job_phase(ports, ports, key, db_url, gen, plan, pids, conc)
    if not plain.latencies:
        raise DispatcherError("no high-tier sample's call.auto job was claimed")
    # ... and the bulkhead case (load on replicas 1..N-1, samples on replica 0 only), same database.
    bulkhead: _FirstJob | None = None
    if n >= 2:
        bulkhead = await _first_job_phase(ports[1:], ports[:1], key, db_url, gen, plan, pids, conc)
        if not bulkhead.latencies:
            raise DispatcherError("bulkhead: no high-tier sample's call.auto job was claimed")

    batch = report.add("ingest_batch_per_s", batch_rates, "records/s")
    baseline = report.add("ingest_baseline_per_s", base_rates, "rows/s")
    ratio = batch / baseline
    report.rows.append(("ingest_ratio", len(batch_rates), ratio,
                        min(b / s for b, s in zip(batch_rates, base_rates, strict=True)),
                        max(b / s for b, s in zip(batch_rates, base_rates, strict=True)), "batch/baseline"))
    report.add("ingest_single_per_s", [single_rate], f"records/s ({single_n} in {plan.single_s:.0f} s)")
    figures: dict[str, float] = {
        "ingest_batch_per_s": round(batch, 1),
        "ingest_single_per_s": round(single_rate, 1),
    }
    where = "all replicas" if n > 1 else "the one process"
    for prefix, result, label in (("first_job", plain, f"load and samples on {where}"),
                                  ("first_job_bulkhead", bulkhead, "load on r1.., samples on r0")):
        if result is None:
            continue
        for suffix, lat, what in (("", result.latencies, "from the 201"),
                                  ("_send", result.send_latencies, "from the request's send")):
            p50, p99 = _percentile(lat, 50), _percentile(lat, 99)
            for pct, value in (("p50", p50), ("p99", p99)):
                report.rows.append((f"{prefix}{suffix}_{pct}_ms", len(lat), value, min(lat), max(lat),
                                    f"ms ({what}; {label})"))
                figures[f"{prefix}{suffix}_{pct}_ms"] = round(value, 2)
        report.add(f"{prefix}_load_per_s", [result.load_per_s], "records/s (batched load during that phase)")
        figures[f"{prefix}_load_per_s"] = round(result.load_per_s, 1)
    figures["ingest_baseline_per_s"] = round(baseline, 1)
    figures["ingest_ratio"] = round(ratio, 3)

    report.notes.append(f"CPU, last batch run: {batch_cpu}")
    report.notes.append(f"CPU, last baseline run: {base_cpu}")
    report.notes.append(f"CPU, single-record window: {single_cpu}")
    for name, result in (("first-job phase", plain), ("first-job bulkhead phase", bulkhead)):
        if result is None:
            continue
        report.notes.append(f"{name}: {result.note}")
        if result.missing:
            report.notes.append(f"{name}: {result.missing} sample job(s) not claimed within 10 s (left out)")
        if not result.load_ran_throughout:
            report.notes.append(f"{name}: the background batch load ended before the last sample")
    return figures


def _describe(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname or 'unix socket'}:{parts.port or ''}" if parts.hostname else "embedded (unix socket)"

