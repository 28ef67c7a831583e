"""Ingest units of work: these own the transaction (routes and the importer call them)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dispatcher.policy.service import PolicyStore
from services.dispatcher.warnings.schemas import ValidRecord
from services.dispatcher.warnings.service import RetryBatch, ingest_batch
from shared.clock import Clock
from shared.db import database_unavailable
from shared.metrics import GROUP_COMMIT_RECORDS, GROUP_COMMIT_SECONDS, WARNINGS_INGESTED

log = structlog.get_logger(__name__)
Answer = dict[str, Any]  # the shape of schemas.WarningResult

# SQLSTATEs worth retrying the whole batch for: serialization failure, deadlock.
_RETRYABLE_SQLSTATE = {"40001", "40P01"}
# SQLSTATE classes that say nothing about the records: connection (08), the server's resources (53),
# operator intervention such as a shutdown (57), the server's own system errors (58). Splitting a group
# cannot help with these; any other database error is taken to be some record's fault (see run_ingest).
_OPERATIONAL_SQLSTATE_CLASSES = {"08", "53", "57", "58"}
MAX_TRIES = 5
# How long a group waits for a restarting database before the request answers 503 with Retry-After.
OUTAGE_RETRY_S = 4.0


class IngestUnavailable(Exception):
    """The database cannot take records just now (unreachable, out of resources, contended): retry later."""


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)


def _retryable(exc: DBAPIError) -> bool:
    return _sqlstate(exc) in _RETRYABLE_SQLSTATE


def _operational(exc: BaseException) -> bool:
    """True when the failure is the database's or the network's, not any record's."""
    if isinstance(exc, IngestUnavailable | OSError | TimeoutError | SQLAlchemyTimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        code = _sqlstate(exc)
        return exc.connection_invalidated or (code is not None and code[:2] in _OPERATIONAL_SQLSTATE_CLASSES)
    return False


def _refused(exc: Exception) -> Answer:
    """The answer for one record that failed on its own: which rule (as the database says it), nothing stored."""
    if isinstance(exc, DBAPIError):
        cause = getattr(exc.orig, "__cause__", None) or exc.orig
        message = (getattr(cause, "message", None) or str(cause)).splitlines()[0][:200]
        reason = f"the database refused this record ({_sqlstate(exc) or 'no SQLSTATE'}: {message}); nothing stored"
    else:
        reason = "not stored because of an internal error (logged); the records beside it are not affected"
    return {"status": "rejected", "errors": [{"field": "record", "reason": reason}]}


async def _ingest_once(sessionmaker: async_sessionmaker[AsyncSession], records: Sequence[ValidRecord], *,
                       actor: str, store: PolicyStore, clock: Clock) -> dict[int, Answer]:
    """One group in one transaction, retried when a concurrent writer got there first, and through a database
    restart's few seconds: a transaction the restart cut off committed nothing (or, cut during COMMIT, did
    commit, and then the retry answers its records as duplicates: stored once either way)."""
    outage_until = asyncio.get_running_loop().time() + OUTAGE_RETRY_S
    attempt = 0
    while attempt < MAX_TRIES:
        attempt += 1
        try:
            async with sessionmaker() as session, session.begin():
                try:
                    await session.connection()
                except Exception as exc:  # no record's SQL has run yet: the database's fault, whatever it says
                    raise IngestUnavailable(f"no database connection ({type(exc).__name__})") from exc
                return await ingest_batch(session, list(records), actor=actor, store=store, now=clock.now())
        except RetryBatch as exc:
            log.info("ingest.retry", attempt=attempt, why=str(exc))
        except Exception as exc:
            if database_unavailable(exc) and asyncio.get_running_loop().time() < outage_until:
                log.info("ingest.retry", why=f"database unavailable ({type(exc).__name__})")
                attempt -= 1  # not a conflict: wait for the database, within OUTAGE_RETRY_S
                await asyncio.sleep(0.25)
                continue
            if not isinstance(exc, DBAPIError) or not _retryable(exc):
                raise
            log.info("ingest.retry", attempt=attempt, why="deadlock or serialization failure")
        await asyncio.sleep(0.005 * attempt)
    raise IngestUnavailable("ingest kept conflicting with concurrent writers; try again")


async def _ingest_isolated(sessionmaker: async_sessionmaker[AsyncSession], records: Sequence[ValidRecord], *,
                           actor: str, store: PolicyStore, clock: Clock) -> dict[int, Answer]:
    """Commit the group; if one record makes it fail, split it in halves until that record stands alone.

    Each half is its own transaction, in order, so warnings about one person
    still meet in one case. k bad records among n cost about 2·k·log2(n) extra
    transactions, not n. The record that fails alone is answered `rejected` with
    its own error; every other record commits.
    """
    try:
        return await _ingest_once(sessionmaker, records, actor=actor, store=store, clock=clock)
    except Exception as exc:
        if _operational(exc):
            if isinstance(exc, IngestUnavailable):
                raise
            raise IngestUnavailable(f"the database cannot take records now ({type(exc).__name__})") from exc
        if len(records) == 1:
            if isinstance(exc, DBAPIError):
                log.warning("ingest.record_refused", sqlstate=_sqlstate(exc), source=records[0].source)
            else:
                log.exception("ingest.record_failed", source=records[0].source)
            return {records[0].index: _refused(exc)}
        log.warning("ingest.isolating", records=len(records), error=type(exc).__name__,
                    sqlstate=_sqlstate(exc) if isinstance(exc, DBAPIError) else None)
    middle = len(records) // 2
    results = await _ingest_isolated(sessionmaker, records[:middle], actor=actor, store=store, clock=clock)
    results.update(await _ingest_isolated(sessionmaker, records[middle:], actor=actor, store=store, clock=clock))
    return results


async def run_ingest(sessionmaker: async_sessionmaker[AsyncSession], records: Sequence[ValidRecord], *,
                     actor: str, store: PolicyStore, clock: Clock) -> dict[int, Answer]:
    """Ingest valid records, one transaction per group; one record's failure never costs the others theirs.

    Every record gets an answer (accepted, duplicate, or rejected with its own
    error). Raises IngestUnavailable only when the database itself cannot take
    records (then nothing of the failing group was stored, and a retry is safe).
    """
    results = await _ingest_isolated(sessionmaker, records, actor=actor, store=store, clock=clock)
    # Counted per (status, tier) first: a labels() lookup per record was ~3% of batched ingest's CPU.
    for (status_, tier), n in Counter((a["status"], a.get("tier") or "none") for a in results.values()).items():
        WARNINGS_INGESTED.labels(status_, tier).inc(n)
    statuses = [r["status"] for r in results.values()]
    log.info("warnings.ingested", records=len(statuses), accepted=statuses.count("accepted"),
             duplicates=statuses.count("duplicate"), rejected=statuses.count("rejected"),
             high=sum(r.get("tier") == "high" and r["status"] == "accepted" for r in results.values()))
    return results


class IngestBatcher:
    """Group commit for single-record POSTs.

    While one transaction is in flight, new requests wait in a list; the next
    transaction takes them all. Under light load a record goes alone (no added
    latency); under heavy load 32 clients share a few commits instead of 32,
    which is where single-record throughput comes from. Every caller still gets
    its answer only after its record is committed, and its own answer: a record
    that fails the group's transaction is split off and answered alone while the
    others commit (`run_ingest`).
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, store: PolicyStore, clock: Clock,
                 max_batch: int = 250, max_inflight: int = 2) -> None:
        self.sessionmaker = sessionmaker
        self.store = store
        self.clock = clock
        self.max_batch = max_batch
        self._pending: list[tuple[ValidRecord, asyncio.Future[Answer]]] = []
        self._slots = asyncio.Semaphore(max_inflight)
        self._kick = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="ingest-batcher")

    async def stop(self) -> None:
        if self._runner:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)

    async def submit(self, record: ValidRecord) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        self._kick.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            while self._pending:
                await self._slots.acquire()
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
                if not batch:
                    self._slots.release()
                    break
                asyncio.create_task(self._commit(batch))

    async def _commit(self, batch: list[tuple[ValidRecord, asyncio.Future[Answer]]]) -> None:
        started = time.perf_counter()
        try:
            records = []
            for position, (record, _) in enumerate(batch):
                record.index = position
                records.append(record)
            results = await run_ingest(self.sessionmaker, records, actor="", store=self.store, clock=self.clock)
            for position, (_, future) in enumerate(batch):
                if not future.done():
                    future.set_result(results[position])
        except Exception as exc:  # noqa: BLE001 - every waiting request must hear about it (IngestUnavailable)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._slots.release()
            GROUP_COMMIT_RECORDS.observe(len(batch))
            GROUP_COMMIT_SECONDS.observe(time.perf_counter() - started)
            if self._pending:
                self._kick.set()
