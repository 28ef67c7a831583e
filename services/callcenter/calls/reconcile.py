"""Reconciling calls with Twilio: every attempt gets its outcome, even when its status callbacks never came.

Twilio tells us how a call ended by a status callback. If the callcenter (or
its database) is down when that callback comes, Twilio does not send it again,
and the attempt would stay `ringing` or `in-progress` for ever, the dispatcher
never told. So a `Reconciler` asks Twilio itself (`calls(sid).fetch`):

- on start (callbacks may have failed while no replica was up), and after a
  gap (a webhook refused because the database could not be reached, or a sweep
  that failed): every unfinished attempt, whatever its age;
- every `interval_s`: the attempts still unfinished after the longest a call can
  last (`overdue_s`: ring timeout + longest script + margin).

A call Twilio says has ended is fed through `record_status`, the status
callback's own path, in a short transaction holding the attempt's row lock,
never open across the HTTP request. `record_status` reports only the first
final status of an attempt, so a late callback after reconciliation, a
reconciliation after the callback, or several replicas reconciling at once all
give the dispatcher one result.

An attempt reserved but without a call sid (the process died inside Twilio's
create request) is found by the call list (To, From, created after the
reservation, a sid no attempt has): adopted, then reconciled like any other.
The PlaceCall job's rerun does this first (calls/service.py, and dials when
Twilio has no such call); the reconciler only closes, as failed, one that the
job has left alone long after (its job gone), when Twilio has no call for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from services.callcenter.calls import models as m
from services.callcenter.calls.service import load_attempt, record_status, result_job
from shared.clock import Clock
from shared.db import database_unavailable, transaction
from shared.queue.service import enqueue
from shared.sql import sql

log = structlog.get_logger(__name__)

# Our attempt states that need no lookup, as an SQL list.
_FINAL = "('" + "', '".join(m.FINAL_STATES) + "')"
# One lookup at Twilio waits at most this long (the HTTP client has no timeout of its own): a hung request
# neither holds a sweep nor a PlaceCall job.
LOOKUP_TIMEOUT_S = 15.0
# How far a Twilio timestamp may be before our reservation (clock skew) and still be the call we asked for.
_SKEW = timedelta(minutes=2)


def callback_form(call: Any) -> dict[str, str]:
    """A Twilio call resource as the fields of the status callback it would have sent at its end."""
    form = {"CallStatus": str(call.status or ""), "CallSid": str(call.sid or "")}
    if call.answered_by:
        form["AnsweredBy"] = str(call.answered_by)
    if call.duration not in (None, ""):
        form["CallDuration"] = str(call.duration)
    return form


async def fetch_call(client: Client, call_sid: str) -> Any | None:
    """Twilio's call resource now, or None when Twilio no longer knows the call (404)."""
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            return await client.calls(call_sid).fetch_async()
    except TwilioRestException as exc:
        if exc.status == 404:
            return None
        raise


async def placed_calls(client: Client, *, to: str, from_: str, not_before: datetime | None) -> list[Any]:
    """Calls our API request created to `to` from `from_` (not legs a <Dial> made), oldest first.

    `not_before`: the reservation's time, when our clock is the wall clock (a simulation's is not).
    """
    async with asyncio.timeout(LOOKUP_TIMEOUT_S):
        calls = await client.calls.list_async(to=to, from_=from_, limit=50, page_size=50)
    out = [c for c in calls if not c.parent_call_sid and (c.direction in (None, "outbound-api"))
           and (not_before is None or c.date_created is None or c.date_created >= not_before - _SKEW)]
    return sorted(out, key=lambda c: c.date_created or datetime.min.replace(tzinfo=UTC))


def wall_time(clock: Clock, at: datetime) -> datetime | None:
    """`at` when our clock runs on wall time (so Twilio's timestamps compare with it); None otherwise."""
    return at if abs(clock.now() - datetime.now(UTC)) < _SKEW else None


async def adopt(session: AsyncSession, *, attempt_id: int, candidates: list[Any], now: datetime) -> str | None:
    """Give the reserved attempt (still without a sid) the oldest candidate call no attempt has; its sid, or None.

    Holds the attempt's row lock; the unique call_sid makes two attempts adopting one call impossible.
    """
    row = (await session.execute(
        sql("SELECT call_sid, status FROM call_attempts WHERE id = :id FOR NO KEY UPDATE"),
        {"id": attempt_id})).first()
    if row is None or row.call_sid is not None:
        return row.call_sid if row is not None else None
    sids = [c.sid for c in candidates]
    known = set((await session.execute(sql("SELECT call_sid FROM call_attempts WHERE call_sid = ANY(:s)"),
                                       {"s": sids})).scalars())
    free = [c for c in candidates if c.sid not in known]
    if not free:
        return None
    sid = free[0].sid
    await session.execute(
        sql("UPDATE call_attempts SET call_sid = :sid, status = CASE WHEN status = :dialing THEN :placed ELSE status"
            " END, error = NULL, updated_at = :now WHERE id = :id"),
        {"sid": sid, "dialing": m.DIALING, "placed": m.PLACED, "now": now, "id": attempt_id})
    return sid


async def apply_outcome(session: AsyncSession, *, attempt_id: int, call: Any | None, now: datetime,
                        scale: float = 1.0) -> str | None:
    """Feed what Twilio says of an ended call through the status callback's path, under the row lock.

    `call` None: Twilio no longer knows it; the attempt is closed as failed (an outcome, never silence).
    Returns the result reported, or None (still live, already final, or nothing new to say).
    """
    row = await load_attempt(session, attempt_id)
    if row is None or row.status in m.FINAL_STATES:
        return None
    if call is None:
        form = {"CallStatus": "failed"}
        detail = "Twilio no longer knows this call; closed by reconciliation"
    elif str(call.status) in m.TWILIO_FINAL:
        form = callback_form(call)
        detail = None
    else:
        return None
    return await record_status(session, row, form, now=now, via="reconciliation", detail=detail, scale=scale)


@dataclass
class Unplaced:
    id: int
    task_id: Any
    attempt: int
    channel: str
    to_number: str
    from_number: str
    created_at: datetime
    updated_at: datetime


class Reconciler:
    """Looks up unfinished attempts at Twilio on start, after a gap, and every `interval_s`; see the module."""

    def __init__(self, client: Client, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock,
                 interval_s: float, overdue_s: float, in_flight_s: float, concurrency: int = 8,
                 batch: int = 500) -> None:
        self.client = client
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.interval_s = interval_s
        self.overdue_s = overdue_s
        self.in_flight_s = in_flight_s
        self.concurrency = concurrency
        self.batch = batch
        self._wake = asyncio.Event()
        self._stopping = False
        self._gaps = 1  # the start is a gap: callbacks may have failed while no replica was up
        self.sweeps = 0

    def note_gap(self) -> None:
        """Callbacks may have been lost just now (a webhook could not reach the database): sweep everything soon."""
        self._gaps += 1
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Until stopped: a full sweep after each gap, an overdue sweep every `interval_s`."""
        while not self._stopping:
            gaps = self._gaps
            try:
                await self.sweep(everything=gaps > 0)
                self._gaps -= gaps  # gaps noted during this sweep are swept again
            except Exception as exc:  # noqa: BLE001 - the database or Twilio is away: try again, everything
                log.warning("reconcile.sweep_failed", error=f"{type(exc).__name__}: {exc}"[:300],
                            database=database_unavailable(exc))
                self._gaps = max(self._gaps, 1)
            self._wake.clear()
            if self._stopping:
                break
            # After a failed sweep or a gap, come back soon (the database is probably returning); else the interval.
            wait_s = min(self.interval_s, 2.0) if self._gaps else self.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait_s)
            if self._gaps and not self._stopping:
                await asyncio.sleep(0.5)  # let a returning database settle, and gather the gaps noted meanwhile

    async def sweep(self, *, everything: bool = False) -> Counter[str]:
        """One pass: every unfinished attempt (`everything`) or those overdue, looked up at Twilio `concurrency` at
        a time, page by page (oldest first)."""
        now = self.clock.now()
        # overdue_s and in_flight_s are real seconds (Twilio's world): scaled onto a fast clock.
        cutoff = now if everything else now - self.clock.real_delta(self.overdue_s)
        counts: Counter[str] = Counter()
        slots = asyncio.Semaphore(self.concurrency)

        async def one(row: Any) -> None:
            async with slots:
                if row.call_sid is not None:
                    counts[await self.reconcile(row.id, row.call_sid) or "live"] += 1
                elif row.status == m.DIALING and row.channel == "auto_call":  # a seat's own call is the seat's
                    counts[await self.resolve_unplaced(Unplaced(
                        row.id, row.task_id, row.attempt, row.channel, row.to_number, row.from_number,
                        row.created_at, row.updated_at)) or "unresolved"] += 1

        after: tuple[datetime, int] | None = None
        seen = 0
        while True:
            async with self.sessionmaker() as session:
                rows = (await session.execute(
                    sql("SELECT id, task_id, attempt, channel, call_sid, status, to_number, from_number, created_at,"
                        " updated_at FROM call_attempts WHERE status NOT IN " + _FINAL +
                        " AND created_at <= :cutoff AND (CAST(:after_at AS timestamptz) IS NULL"
                        " OR (created_at, id) > (CAST(:after_at AS timestamptz), :after_id))"
                        " ORDER BY created_at, id LIMIT :n"),
                    {"cutoff": cutoff, "after_at": after[0] if after else None, "after_id": after[1] if after else 0,
                     "n": self.batch})).all()
            if not rows:
                break
            seen += len(rows)
            after = (rows[-1].created_at, rows[-1].id)
            results = await asyncio.gather(*(one(r) for r in rows), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            counts["errors"] += len(errors)
            if errors:
                log.warning("reconcile.lookup_failed", errors=len(errors),
                            first=f"{type(errors[0]).__name__}: {errors[0]}"[:300])
                if any(database_unavailable(e) for e in errors):
                    raise errors[0]  # the database went away mid-sweep: the next sweep is a full one
            if len(rows) < self.batch:
                break
        self.sweeps += 1
        if seen:
            log.info("reconcile.swept", everything=everything, attempts=seen, **counts)
        return counts

    async def reconcile(self, attempt_id: int, call_sid: str) -> str | None:
        """Ask Twilio about one call (no transaction open); if it ended, record it once. The result reported."""
        call = await fetch_call(self.client, call_sid)
        async with transaction(self.sessionmaker) as session:
            result = await apply_outcome(session, attempt_id=attempt_id, call=call, now=self.clock.now(),
                                         scale=self.clock.scale)
        if result is not None:
            log.info("reconcile.closed", attempt_id=attempt_id, call_sid=call_sid, result=result,
                     twilio_status=getattr(call, "status", "gone"))
        return result

    async def resolve_unplaced(self, attempt: Unplaced) -> str | None:
        """A reserved attempt without a sid, left by its job: adopt Twilio's call for it, or close it as failed.

        Only once no create request can be in flight (`in_flight_s`); closed only when its job has had the
        overdue time on top to resolve it itself (the job's rerun dials; this never does).
        """
        now = self.clock.now()
        if attempt.updated_at > now - self.clock.real_delta(self.in_flight_s):
            return None
        calls = await placed_calls(self.client, to=attempt.to_number, from_=attempt.from_number,
                                   not_before=wall_time(self.clock, attempt.created_at))
        try:
            async with transaction(self.sessionmaker) as session:
                sid = await adopt(session, attempt_id=attempt.id, candidates=calls, now=self.clock.now())
                if sid is None and attempt.updated_at <= now - self.clock.real_delta(self.in_flight_s + self.overdue_s):
                    closed = await close_unplaced(session, attempt_id=attempt.id, seen_updated_at=attempt.updated_at,
                                                  now=self.clock.now(),
                                                  why="no call was placed: the process stopped before Twilio took"
                                                      " it, and its job did not come back")
                    return "failed" if closed else None
        except IntegrityError:
            return None  # another attempt adopted that call at the same moment: the next sweep looks again
        if sid is None:
            return None
        log.info("reconcile.adopted", attempt_id=attempt.id, call_sid=sid)
        return await self.reconcile(attempt.id, sid) or "adopted"


async def close_unplaced(session: AsyncSession, *, attempt_id: int, seen_updated_at: datetime, now: datetime,
                         why: str) -> bool:
    """Close a reserved attempt no call exists for as failed, and say so once; False when its job moved it on.

    Conditional on the reservation being exactly as seen: a job rerun that took it to dial changed it first.
    """
    row = (await session.execute(
        sql("UPDATE call_attempts SET status = 'failed', outcome = COALESCE(outcome, 'failed'), error = :e,"
            " updated_at = :now WHERE id = :id AND status = :dialing AND call_sid IS NULL AND updated_at = :seen"
            " RETURNING task_id, attempt, channel"),
        {"e": why[:500], "now": now, "id": attempt_id, "dialing": m.DIALING, "seen": seen_updated_at})).first()
    if row is None:
        return False
    if row.channel == "auto_call":
        await enqueue(session, [result_job(task_id=row.task_id, attempt=row.attempt, result="failed", now=now,
                                           detail=why, channel=row.channel)], now=now)
    return True

