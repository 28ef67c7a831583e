"""Ingest units of work: these own the transaction (routes and the importer call them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dispatcher.policy.service import PolicyStore
from services.dispatcher.warnings.schemas import ValidRecord
from services.dispatcher.warnings.service import RetryBatch, ingest_batch
from shared.clock import Clock
from shared.metrics import GROUP_COMMIT_RECORDS, GROUP_COMMIT_SECONDS, WARNINGS_INGESTED

log = structlog.get_logger(__name__)
Answer = dict[str, Any]  # the shape of schemas.WarningResult

# SQLSTATEs worth retrying the whole batch for: serialization failure, deadlock.
_RETRYABLE_SQLSTATE = {"40001", "40P01"}
MAX_TRIES = 5


def _retryable(exc: DBAPIError) -> bool:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return code in _RETRYABLE_SQLSTATE


async def run_ingest(sessionmaker: async_sessionmaker[AsyncSession], records: Sequence[ValidRecord], *,
                     actor: str, store: PolicyStore, clock: Clock) -> dict[int, Answer]:
    """Ingest valid records in one transaction, retried when a concurrent writer got there first."""
    for attempt in range(1, MAX_TRIES + 1):
        try:
            async with sessionmaker() as session, session.begin():
                results = await ingest_batch(session, list(records), actor=actor, store=store, now=clock.now())
            for answer in results.values():
                WARNINGS_INGESTED.labels(answer["status"], answer.get("tier") or "none").inc()
            statuses = [r["status"] for r in results.values()]
            log.info("warnings.ingested", records=len(statuses), accepted=statuses.count("accepted"),
                     duplicates=statuses.count("duplicate"),
                     high=sum(r["tier"] == "high" and r["status"] == "accepted" for r in results.values()))
            return results
        except RetryBatch as exc:
            log.info("ingest.retry", attempt=attempt, why=str(exc))
        except DBAPIError as exc:
            if not _retryable(exc) or attempt == MAX_TRIES:
                raise
            log.info("ingest.retry", attempt=attempt, why="deadlock or serialization failure")
        await asyncio.sleep(0.005 * attempt)
    raise RuntimeError("ingest kept conflicting with concurrent writers; try again")


class IngestBatcher:
    """Group commit for single-record POSTs.

    While one transaction is in flight, new requests wait in a list; the next
    transaction takes them all. Under light load a record goes alone (no added
    latency); under heavy load 32 clients share a few commits instead of 32,
    which is where single-record throughput comes from. Every caller still gets
    its answer only after its record is committed.
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
        except Exception as exc:  # noqa: BLE001 - every waiting request must hear about it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self._slots.release()
            GROUP_COMMIT_RECORDS.observe(len(batch))
            GROUP_COMMIT_SECONDS.observe(time.perf_counter() - started)
            if self._pending:
                self._kick.set()
