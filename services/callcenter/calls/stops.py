"""An acknowledgement stops all contact: cancelling the automated calls the dispatcher no longer wants.

The dispatcher cancels a task's queued call jobs itself, in the transaction that
closes the task (or records "call me back", "not me", money sent); its
`StopCalls` job reaches the calls that already left the queue:

- queued or ringing at Twilio: `Status=canceled` (Twilio cancels only those);
- in progress: `Status=completed` (hangs up); a call answered between our read
  and the cancel is still in progress afterwards, so it is then completed;
- being placed right now (reserved, no call sid yet): nothing to ask Twilio yet.
  The order is recorded in `call_stops` and on the attempt row first; the placer
  checks both, under the attempt's row lock, when it stores the sid, and
  cancels at once (`CallPlacer.place`, step 3). A PlaceCall job that starts after
  the order places no call at all (step 1).

Never cut: a seat operator's call (channel operator_call), the call the citizen
is answering on (`except_attempt`: it is saying "recorded"), and a call whose
citizen is being put through to, or talking with, a seat (key 2): a person is on
it. Each stopped call is reported once as result "stopped", which the playbook
never retries; the status callback Twilio sends after the cancel sees
`stop_requested_at` and reports nothing else (a "canceled" would be retried).

Latency: stops run in a worker of their own (`make_stop_worker`) that claims
only `call.stop` jobs, so a stop never waits behind paced `call.auto` jobs,
which hold the main worker's slots for seconds each (1 call per second per
account). The dispatcher's commit NOTIFYs the callcenter queue; the stop worker
wakes, claims and asks Twilio within tens of milliseconds (`shouhu bench calls`:
`ack_to_cancel_p99_ms`).

Idempotent: an attempt is reported "stopped" only while its outcome is still
empty (one conditional UPDATE), so a rerun, or the placer and the stop job
racing for the same call, report it once; asking Twilio twice is harmless (an
ended call is answered unchanged, or 404 / 21220, both treated as done).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from services.callcenter.calls import models as m
from shared import contracts
from shared.clock import Clock
from shared.db import transaction
from shared.queue.service import ClaimedJob, enqueue
from shared.queue.worker import Handler, Worker
from shared.sql import sql

log = structlog.get_logger(__name__)

# Twilio answers a cancel of a call it no longer knows with 404 (20404), and an update of a call no longer in a
# state that allows it with 400 code 21220 ("Unable to update record"): the call is over either way.
BENIGN_CODES = frozenset({20404, 21220})
_FINAL = "('" + "', '".join(m.FINAL_STATES) + "')"
# A person is on these calls (key 2): ringing seats for the citizen, or bridged to one.
_PERSON_ON_THE_LINE = ("SELECT 1 FROM call_transfers tr WHERE tr.attempt_id = a.id"
                       f" AND tr.outcome IN ('{m.TRANSFER_RINGING}', '{m.TRANSFER_CONNECTED}')")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TwilioRestException) and (exc.status == 429 or exc.status >= 500)


async def hang_up(client: Client, call_sid: str, status: str) -> str:
    """Cancel a call still queued or ringing, end one in progress; returns its status afterwards as Twilio says."""
    async for retry in AsyncRetrying(retry=retry_if_exception(_retryable), stop=stop_after_attempt(3),
                                     wait=wait_exponential_jitter(multiplier=0.2, max=2, jitter=0.2), reraise=True):
        with retry:
            try:
                if status == "in-progress":
                    return (await client.calls(call_sid).update_async(status="completed")).status
                call = await client.calls(call_sid).update_async(status="canceled")
                if call.status == "in-progress":
                    # Answered between our read and the cancel: "canceled" leaves a live call alone.
                    call = await client.calls(call_sid).update_async(status="completed")
                return call.status
            except TwilioRestException as exc:
                if exc.status == 404 or exc.code in BENIGN_CODES:
                    return f"gone (Twilio {exc.code})"
                raise
    raise AssertionError("unreachable")


# ---- the database side (callers own the transaction) ----------------------------------------------------------

async def record_order(session: AsyncSession, order: contracts.StopCalls, *, now: datetime) -> None:
    """Keep the order (once), so a call being placed now, or a call job that starts later, is stopped too."""
    await session.execute(
        sql("INSERT INTO call_stops (task_id, reason, outcome, except_attempt, decided_at, recorded_at)"
            " VALUES (:t, :r, :o, :x, :d, :now)"
            " ON CONFLICT ON CONSTRAINT uq_call_stops_task_reason_decided DO NOTHING"),
        {"t": order.task_id, "r": order.reason, "o": order.outcome, "x": order.except_attempt,
         "d": order.decided_at, "now": now})


async def mark_for_stop(session: AsyncSession, *, task_id: uuid.UUID, except_attempt: int | None,
                        now: datetime) -> list[Any]:
    """Mark the task's live automated calls to be stopped; returns them (id, attempt, call_sid, status).

    One UPDATE: it waits for the placer's lock on a row being placed, then sees the sid the placer stored.
    """
    return list((await session.execute(
        sql("UPDATE call_attempts a SET stop_requested_at = COALESCE(a.stop_requested_at, :now)"
            " WHERE a.task_id = :t AND a.channel = 'auto_call' AND a.status NOT IN " + _FINAL +
            " AND a.outcome IS DISTINCT FROM 'stopped'"
            " AND (CAST(:x AS integer) IS NULL OR a.attempt <> CAST(:x AS integer))"
            f" AND NOT EXISTS ({_PERSON_ON_THE_LINE})"
            " RETURNING a.id, a.attempt, a.call_sid, a.status"),
        {"t": task_id, "x": except_attempt, "now": now})).all())


async def stop_applies(session: AsyncSession, *, task_id: uuid.UUID, attempt: int, due_at: datetime) -> str | None:
    """The reason of a stop order that covers a call job due at `due_at` for this attempt, or None.

    An order covers the jobs that were due when the dispatcher decided it (it cancelled those still queued);
    a job the dispatcher queues later (a new plan after a new warning) is its own decision.
    """
    return (await session.execute(
        sql("SELECT reason FROM call_stops WHERE task_id = :t AND decided_at >= :due"
            " AND (except_attempt IS NULL OR except_attempt <> :a) ORDER BY decided_at DESC LIMIT 1"),
        {"t": task_id, "due": due_at, "a": attempt})).scalar_one_or_none()


async def report_stopped(session: AsyncSession, *, attempt_id: int, now: datetime, detail: str) -> bool:
    """Tell the dispatcher this call was stopped on its order, once (True the first time)."""
    row = (await session.execute(
        sql("UPDATE call_attempts SET outcome = 'stopped', stop_requested_at = COALESCE(stop_requested_at, :now),"
            " updated_at = :now WHERE id = :id AND outcome IS NULL RETURNING task_id, attempt, channel"),
        {"id": attempt_id, "now": now})).first()
    if row is None:
        return False
    result = contracts.ChannelResult(task_id=row.task_id, channel=row.channel, attempt=row.attempt, result="stopped",
                                     detail=detail[:500], actor="system:callcenter")
    await enqueue(session, [result.to_job(now=now)], now=now)
    return True


# ---- the job --------------------------------------------------------------------------------------------------

class CallStopper:
    """The `call.stop` job handler: three steps, never a transaction open while Twilio is asked."""

    def __init__(self, client: Client, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock) -> None:
        self.client = client
        self.sessionmaker = sessionmaker
        self.clock = clock

    async def stop(self, job: ClaimedJob) -> None:
        order = contracts.StopCalls.of(job)
        # 1. Record the order and mark the calls it reaches.
        async with transaction(self.sessionmaker) as session:
            await record_order(session, order, now=self.clock.now())
            targets = await mark_for_stop(session, task_id=order.task_id, except_attempt=order.except_attempt,
                                          now=self.clock.now())
        placing = [t for t in targets if t.call_sid is None]
        live = [t for t in targets if t.call_sid is not None]
        # 2. Ask Twilio, all at once (a task has one or two live calls at most).
        answers = await asyncio.gather(*(hang_up(self.client, t.call_sid, t.status) for t in live),
                                       return_exceptions=True)
        # 3. Report what stopped; a call Twilio could not be asked about is retried with the job.
        failed = [(t, a) for t, a in zip(live, answers, strict=True) if isinstance(a, BaseException)]
        done = [(t, a) for t, a in zip(live, answers, strict=True) if not isinstance(a, BaseException)]
        if done:
            async with transaction(self.sessionmaker) as session:
                reported = 0
                for target, status in done:
                    reported += await report_stopped(
                        session, attempt_id=target.id, now=self.clock.now(),
                        detail=f"stopped on the dispatcher's order ({order.reason}); Twilio status {status}")
                await session.execute(
                    sql("UPDATE call_stops SET calls_stopped = calls_stopped + :n WHERE task_id = :t AND reason = :r"
                        " AND decided_at = :d"), {"n": reported, "t": order.task_id, "r": order.reason,
                                                   "d": order.decided_at})
        lag_ms = round((self.clock.now() - order.decided_at).total_seconds() * 1000)
        log.info("calls.stopped", reason=order.reason, stopped=len(done), placing=len(placing), failed=len(failed),
                 since_decision_ms=lag_ms, sids=[t.call_sid for t, _ in done])
        if failed:
            raise failed[0][1]


def make_stop_worker(stopper: CallStopper, sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock,
                     database_url: str | None, poll_interval_s: float = 1.0, concurrency: int = 8,
                     lease_s: float = 10.0, grace_s: float = 8.0) -> Worker:
    """The callcenter's second worker: stop orders only, so none waits behind paced calls."""
    return Worker(sessionmaker, queue=contracts.CALLCENTER_QUEUE, clock=clock, database_url=database_url,
                  handlers={contracts.StopCalls.KIND: Handler(stopper.stop, transactional=False)},
                  concurrency=concurrency, batch_size=concurrency, poll_interval_s=poll_interval_s, lease_s=lease_s,
                  grace_s=grace_s)
