"""Placing automated warning calls and turning Twilio's callbacks into results for the dispatcher.

A `PlaceCall` job becomes at most one ringing phone: (1) a short transaction
checks the task is still open, the number is not on the do-not-call list, its
country may get automated calls (CALLCENTER_AUTODIAL_COUNTRIES; otherwise the
result "operator_required" sends it to a seat), the daily cap and the call
window allow it, and reserves the attempt row (unique
per task, channel and attempt); (2) pacing, then the Twilio request, with no
transaction open; (3) the call sid is stored. A rerun that finds the attempt
already placed never dials again. One that finds it reserved without a call
sid (the process died inside the Twilio request) does not guess: once no
create request can still be in flight (`dial_in_flight_s`), it asks Twilio's
call list whether the call exists; if so it adopts the sid and reconciles the
call (calls/reconcile.py), if not it dials now for the same attempt (no phone
rang for it). While Twilio cannot be asked it retries later, never dialling
blind. (It used to report such an attempt "uncertain", and the dispatcher
called again 5 minutes later.)

A stop order (StopCalls, see stops.py) can arrive at any point of this: before
step 1 it means no call (the order covers every job due when it was decided);
between steps 1 and 3 it marks the reserved attempt, and step 3, holding the
attempt's row lock, sees the mark (or the order, or the task closed) and
cancels the call it has just placed, at once.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import phonenumbers
import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from services.callcenter.calls import models as m
from services.callcenter.calls import stops, transfers
from services.callcenter.calls.pacing import CallPacer
from shared import contracts
from shared.clock import Clock
from shared.contracts import bot as bot_contract
from shared.contracts import dispatcher as dispatcher_contract
from shared.contracts import next_call_time
from shared.db import transaction
from shared.queue.service import ClaimedJob, NewJob, enqueue
from shared.queue.worker import PermanentJobError, RetryLater
from shared.sql import sql

log = structlog.get_logger(__name__)

STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
# Twilio's final CallStatus -> the result the dispatcher's playbook reacts to (busy retries sooner).
FINAL_RESULTS = {"busy": "busy", "no-answer": "no_answer", "failed": "failed", "canceled": "canceled"}


@dataclass(frozen=True)
class Unresolved:
    """An attempt a job reserved and began dialling, with no call sid stored: did Twilio take the call?"""

    id: int
    to_number: str
    from_number: str
    created_at: datetime
    updated_at: datetime  # when the last dial began


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TwilioRestException) and (exc.status == 429 or exc.status >= 500)


def result_job(*, task_id: uuid.UUID, attempt: int, result: str, now: datetime, detail: str | None = None,
               feedback: str | None = None, channel: str = "auto_call",
               live_transfer_until: datetime | None = None) -> NewJob:
    """What happened on a call (or the key the citizen pressed), as a result job for the dispatcher."""
    return contracts.ChannelResult(task_id=task_id, channel=channel, attempt=attempt, result=result, detail=detail,
                                   feedback=feedback, actor=f"citizen:phone:{channel}",
                                   live_transfer_until=live_transfer_until).to_job(now=now)


def country_of(phone: str) -> str:
    """The ISO country code of an E.164 number ("CN", "GB", "HK"), or "ZZ" when it belongs to none."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(phone)) or "ZZ"
    except phonenumbers.NumberParseException:
        return "ZZ"


class CallPlacer:
    def __init__(self, client: Client, sessionmaker: async_sessionmaker[AsyncSession], *, pacer: CallPacer,
                 clock: Clock, from_number: str, public_url: str, daily_cap: int,
                 autodial_countries: frozenset[str] = frozenset({"CN"}), ring_timeout_s: int = 30,
                 dial_deadline_s: float = 90.0, dial_in_flight_s: float = 105.0) -> None:
        self.client = client
        self.sessionmaker = sessionmaker
        self.pacer = pacer
        self.clock = clock
        self.from_number = from_number
        self.public_url = public_url.rstrip("/")
        self.daily_cap = daily_cap
        self.autodial_countries = autodial_countries
        self.ring_timeout_s = ring_timeout_s
        self.dial_deadline_s = dial_deadline_s
        self.dial_in_flight_s = dial_in_flight_s

    def may_autodial(self, phone: str) -> str | None:
        """None when `phone` may get an automated call; else why not (its country is not allowed)."""
        if "*" in self.autodial_countries:
            return None
        country = country_of(phone)
        if country in self.autodial_countries:
            return None
        return (f"a number of {country}: automated calls go only to {', '.join(sorted(self.autodial_countries))}"
                " (CALLCENTER_AUTODIAL_COUNTRIES); a seat operator calls instead")

    def url(self, path: str, attempt_id: int, **query: object) -> str:
        extra = "".join(f"&{k}={v}" for k, v in query.items())
        return f"{self.public_url}{path}?attempt={attempt_id}{extra}"

    async def place(self, job: ClaimedJob) -> None:
        """The automated call job handler."""
        call = contracts.PlaceCall.of(job)
        now = self.clock.now()

        # 1. Checks and the reservation.
        async with transaction(self.sessionmaker) as session:
            attempt_id = await self._reserve(session, call, job, now)
        if isinstance(attempt_id, tuple):  # a rerun with a stop order left unfinished: finish it now
            await self._stop_placed(*attempt_id)
            return
        if isinstance(attempt_id, Unresolved):  # a rerun: the first run died inside the Twilio request
            await self._resolve(call, job, attempt_id)
            return
        if attempt_id is None:
            return
        await self._dial(call, job, attempt_id)

    async def _dial(self, call: contracts.PlaceCall, job: ClaimedJob, attempt_id: int) -> None:
        """Steps 2 and 3 for a reserved attempt: ask Twilio for the call, then store its sid."""
        task_id, attempt, phone = call.task_id, call.attempt, call.phone
        # 2. Pace, then ask Twilio (no transaction open).
        try:
            placed = await self._create_call(phone, attempt_id)
        except TwilioRestException as exc:
            # A permanently bad number or request: the attempt fails with Twilio's reason.
            async with transaction(self.sessionmaker) as session:
                await session.execute(
                    sql("UPDATE call_attempts SET status = 'failed', error = :e, outcome = 'failed', updated_at = :now"
                        " WHERE id = :id"),
                    {"e": f"Twilio {exc.status} code {exc.code}: {exc.msg}"[:500], "now": self.clock.now(),
                     "id": attempt_id})
                await enqueue(session, [result_job(task_id=task_id, attempt=attempt, result="failed",
                                                   now=self.clock.now(), detail=f"Twilio code {exc.code}: {exc.msg}")],
                              now=self.clock.now())
            log.warning("call.failed", code=exc.code, status=exc.status, error=str(exc.msg)[:200])
            return

        # 3. Remember the call; if a stop order came meanwhile, cancel it at once.
        async with transaction(self.sessionmaker) as session:
            # The row lock orders this against the stop job's mark (stops.mark_for_stop): whichever comes
            # second sees the other's write.
            marked = (await session.execute(
                sql("SELECT stop_requested_at FROM call_attempts WHERE id = :id FOR NO KEY UPDATE"),
                {"id": attempt_id})).scalar_one()
            await session.execute(
                # A fast call's callbacks may have come first (and stored the sid and a later, even final, status).
                sql("UPDATE call_attempts SET call_sid = :sid, status = CASE WHEN status = :dialing THEN :s"
                    " ELSE status END, updated_at = :now WHERE id = :id"),
                {"sid": placed.sid, "s": m.PLACED, "dialing": m.DIALING, "now": self.clock.now(), "id": attempt_id})
            why = await self._stop_reason(session, task_id, attempt, job.run_at, marked=marked is not None)
            if why is not None:
                await session.execute(
                    sql("UPDATE call_attempts SET stop_requested_at = COALESCE(stop_requested_at, :now) WHERE id = :id"),
                    {"now": self.clock.now(), "id": attempt_id})
        log.info("call.placed", call_sid=placed.sid, attempt=attempt, phone=phone)
        if why is not None:
            await self._stop_placed(attempt_id, placed.sid, placed.status or "queued", why)

    async def _stop_reason(self, session: AsyncSession, task_id: uuid.UUID, attempt: int, due_at: datetime, *,
                           marked: bool) -> str | None:
        """Why a call just placed must stop at once (a stop order came while it was being placed), or None."""
        if marked:
            return "a stop order came while the call was being placed"
        task = await dispatcher_contract.task_brief(session, task_id)
        if task is None or task.closed:
            return "the task closed while the call was being placed"
        reason = await stops.stop_applies(session, task_id=task_id, attempt=attempt, due_at=due_at)
        return f"a stop order ({reason}) came while the call was being placed" if reason else None

    async def _stop_placed(self, attempt_id: int, call_sid: str, status: str, why: str) -> None:
        """Cancel a call this job placed and report it stopped (no transaction open while Twilio is asked)."""
        after = await stops.hang_up(self.client, call_sid, status)  # raises: the job is retried, and its rerun stops it
        async with transaction(self.sessionmaker) as session:
            await stops.report_stopped(session, attempt_id=attempt_id, now=self.clock.now(),
                                       detail=f"{why}; Twilio status {after}")
        log.info("call.stopped_at_once", call_sid=call_sid, why=why, twilio_status=after)

    async def _reserve(self, session: AsyncSession, call: contracts.PlaceCall, job: ClaimedJob,
                       now: datetime) -> int | tuple[int, str, str, str] | Unresolved | None:
        """Step 1: the attempt row to dial for, or None when no call is to be made (said why to the dispatcher).

        A rerun whose stop order is unfinished returns what `_stop_placed` needs instead.
        """
        task_id, attempt, phone = call.task_id, call.attempt, call.phone
        existing = (await session.execute(
            sql("SELECT id, status, call_sid, outcome, stop_requested_at, to_number, from_number, created_at,"
                " updated_at FROM call_attempts WHERE task_id = :t AND channel = 'auto_call' AND attempt = :a"),
            {"t": task_id, "a": attempt})).first()
        if (existing is not None and existing.stop_requested_at is not None and existing.call_sid is not None
                and existing.outcome is None and existing.status not in m.FINAL_STATES):
            # This job placed the call, then failed to cancel it: the task may have closed since, cancel anyway.
            return existing.id, existing.call_sid, existing.status, "a stop order came while the call was being placed"
        if existing is not None and existing.status == m.DIALING and existing.call_sid is None:
            # Reserved, no sid: the first run died inside the create request. Twilio is asked (`_resolve`).
            return Unresolved(existing.id, existing.to_number, existing.from_number, existing.created_at,
                              existing.updated_at)
        task = await dispatcher_contract.task_brief(session, task_id)
        if task is None:
            raise PermanentJobError(f"no task {task_id}")
        if task.closed:
            log.info("call.skipped", why="task closed")
            return None
        if existing is not None:
            # The job ran before and the call was placed (or skipped): never dial again for this attempt; its
            # outcome comes by callback, or by reconciliation (calls/reconcile.py).
            log.info("call.already_placed", attempt=attempt, status=existing.status)
            return None
        stopped_by = await stops.stop_applies(session, task_id=task_id, attempt=attempt, due_at=job.run_at)
        if stopped_by is not None:
            await self._skip(session, task_id, attempt, phone, now, "stopped",
                             f"automated calls were stopped before this one was placed ({stopped_by})")
            return None
        blocked = (await session.execute(sql("SELECT reason FROM do_not_call WHERE phone = :p"),
                                         {"p": phone})).scalar_one_or_none()
        if blocked is not None:
            await self._skip(session, task_id, attempt, phone, now, "do_not_call", blocked)
            return None
        foreign = self.may_autodial(phone)
        if foreign is not None:
            # Not dialled; the dispatcher turns this result into an operator call at once.
            await self._skip(session, task_id, attempt, phone, now, "operator_required", foreign)
            return None
        allowed = next_call_time(call.call_window, now)
        if allowed > now:
            # Not an error: come back when the citizen's local call window opens.
            raise RetryLater((allowed - now).total_seconds(), "outside the call window", on_clock=True)
        recent = (await session.execute(
            sql("SELECT count(*) FROM call_attempts WHERE to_number = :p AND created_at > :since"
                " AND status NOT IN ('skipped')"),
            {"p": phone, "since": now - timedelta(hours=24)})).scalar_one()
        if recent >= self.daily_cap:
            await self._skip(session, task_id, attempt, phone, now, "capped",
                             f"{recent} calls to this number in 24 h (cap {self.daily_cap})")
            return None
        # The language the citizen chose in the bot, if they ever talked to it (the bot's to tell).
        lang = await bot_contract.preferred_lang(session, phone) or "zh"
        return (await session.execute(
            sql("INSERT INTO call_attempts (task_id, channel, attempt, to_number, from_number, lang, fraud_type,"
                " status, created_at, updated_at)"
                " VALUES (:t, 'auto_call', :a, :to, :from_, :lang, :ft, :s, :now, :now) RETURNING id"),
            {"t": task_id, "a": attempt, "to": phone, "from_": self.from_number, "lang": lang,
             "ft": call.fraud_type, "s": m.DIALING, "now": now})).scalar_one()

    async def _create_call(self, to: str, attempt_id: int) -> Any:
        # The whole request, pacing and retries included, ends by the deadline: a rerun waits that long (plus a
        # margin) before it asks Twilio whether the call exists, so it never races a request still in flight.
        async with asyncio.timeout(self.dial_deadline_s):
            return await self._create_call_retrying(to, attempt_id)

    async def _create_call_retrying(self, to: str, attempt_id: int) -> Any:
        async for retry in AsyncRetrying(retry=retry_if_exception(_retryable), stop=stop_after_attempt(5),
                                         wait=wait_exponential_jitter(initial=1, max=30), reraise=True):
            with retry:
                async with self.pacer.slot():
                    return await self.client.calls.create_async(
                        to=to, from_=self.from_number, method="POST",
                        url=self.url("/twilio/voice", attempt_id, round=1),
                        status_callback=self.url("/twilio/status", attempt_id),
                        status_callback_method="POST", status_callback_event=STATUS_EVENTS,
                        machine_detection="Enable", timeout=self.ring_timeout_s)
        raise AssertionError("unreachable")

    async def _resolve(self, call: contracts.PlaceCall, job: ClaimedJob, unresolved: Unresolved) -> None:
        """A rerun found the attempt reserved without a sid: ask Twilio whether the call exists, never dial blind.

        Once no create request can still be in flight, the call list (To, From, after the reservation, a sid no
        attempt has) says: a call exists -> adopt its sid and reconcile it; none -> dial now for the same
        attempt (no phone rang for it). Twilio cannot be asked -> retried later, still unresolved.
        """
        from services.callcenter.calls import reconcile  # it builds on this module's record_status

        now = self.clock.now()
        # dial_in_flight_s is real seconds (a request on its way to Twilio); the wait is real seconds too.
        wait_s = self.dial_in_flight_s - (now - unresolved.updated_at).total_seconds() / self.clock.scale
        if wait_s > 0:
            raise RetryLater(wait_s, "the first dial may still be on its way to Twilio")
        try:
            calls = await reconcile.placed_calls(self.client, to=unresolved.to_number, from_=unresolved.from_number,
                                                 not_before=reconcile.wall_time(self.clock, unresolved.created_at))
        except Exception as exc:  # noqa: BLE001 - Twilio unreachable or refusing: never dial without knowing
            log.warning("call.unresolved", attempt=call.attempt, error=f"{type(exc).__name__}: {exc}"[:200])
            raise RetryLater(30, "Twilio cannot say whether the call exists; not dialled blind") from exc
        async with transaction(self.sessionmaker) as session:
            sid = await reconcile.adopt(session, attempt_id=unresolved.id, candidates=calls, now=self.clock.now())
            if sid is None:
                # No call exists: take the reservation for a new dial (conditional: a concurrent run or the
                # reconciler that moved it on first wins) unless the task closed or a stop order came.
                row = (await session.execute(
                    sql("UPDATE call_attempts SET updated_at = :now WHERE id = :id AND status = :dialing"
                        " AND call_sid IS NULL AND updated_at = :seen RETURNING stop_requested_at"),
                    {"now": self.clock.now(), "id": unresolved.id, "dialing": m.DIALING,
                     "seen": unresolved.updated_at})).first()
                if row is None:
                    log.info("call.resolved_elsewhere", attempt=call.attempt)
                    return
                why = await self._stop_reason(session, call.task_id, call.attempt, job.run_at,
                                              marked=row.stop_requested_at is not None)
                if why is not None:
                    await session.execute(
                        sql("UPDATE call_attempts SET status = 'canceled', error = :e WHERE id = :id"),
                        {"e": f"not dialled again: {why}"[:500], "id": unresolved.id})
                    await stops.report_stopped(session, attempt_id=unresolved.id, now=self.clock.now(),
                                               detail=f"{why}; Twilio had no call for it, none was placed")
                    return
        if sid is None:
            log.info("call.redial", attempt=call.attempt, why="Twilio has no call for this attempt")
            await self._dial(call, job, unresolved.id)
            return
        log.info("call.adopted", attempt=call.attempt, call_sid=sid)
        found = await reconcile.fetch_call(self.client, sid)
        async with transaction(self.sessionmaker) as session:
            row = await load_attempt(session, unresolved.id)
            why = await self._stop_reason(session, call.task_id, call.attempt, job.run_at,
                                          marked=row.stop_requested_at is not None)
            await reconcile.apply_outcome(session, attempt_id=unresolved.id, call=found, now=self.clock.now(),
                                          scale=self.clock.scale)
        if why is not None and found is not None and str(found.status) not in m.TWILIO_FINAL:
            await self._stop_placed(unresolved.id, sid, str(found.status), why)

    async def _skip(self, session: AsyncSession, task_id: uuid.UUID, attempt: int, phone: str, now: datetime,
                    result: str, why: str) -> None:
        await session.execute(
            sql("INSERT INTO call_attempts (task_id, channel, attempt, to_number, from_number, status, outcome,"
                " error, created_at, updated_at) VALUES (:t, 'auto_call', :a, :to, :from_, 'skipped', :o, :e, :now, :now)"
                " ON CONFLICT ON CONSTRAINT uq_call_attempts_task_channel_attempt DO NOTHING"),
            {"t": task_id, "a": attempt, "to": phone, "from_": self.from_number, "o": result, "e": why, "now": now})
        await enqueue(session, [result_job(task_id=task_id, attempt=attempt, result=result, now=now, detail=why)],
                      now=now)
        log.info("call.skipped", why=why, result=result)


# ---- what Twilio tells us during and after the call ---------------------------------------------------

async def load_attempt(session: AsyncSession, attempt_id: int) -> Any:
    """The attempt, locked for the webhook's transaction.

    FOR NO KEY UPDATE, not FOR UPDATE: the key never changes, and the stronger lock would block the foreign-key
    check a concurrent write of the call's transfer row makes (a lock-order deadlock between the Dial's action
    and the seat's leg callback, which Twilio sends at the same moment).
    """
    return (await session.execute(
        sql("SELECT id, task_id, attempt, channel, lang, digits, answered_by, status, outcome, stop_requested_at,"
            " call_sid, COALESCE(fraud_type, 'other') AS fraud_type FROM call_attempts WHERE id = :id FOR NO KEY UPDATE"),
        {"id": attempt_id})).first()


async def record_key(session: AsyncSession, attempt: Any, *, digits: str, feedback: str | None,
                     now: datetime, live_transfer_until: datetime | None = None) -> None:
    """A key pressed: always noted; a valid one becomes the citizen's answer for the dispatcher (once).

    `live_transfer_until`: key 2 put the citizen through to ringing seats until then (transfers.py).
    """
    await session.execute(
        sql("UPDATE call_attempts SET digits = COALESCE(digits, '') || :d, updated_at = :now,"
            " outcome = COALESCE(outcome, :o) WHERE id = :id"),
        {"d": digits[:8], "now": now, "o": feedback, "id": attempt.id})
    if feedback:
        await enqueue(session, [result_job(task_id=attempt.task_id, attempt=attempt.attempt, result="answered",
                                           feedback=feedback, now=now, channel=attempt.channel,
                                           live_transfer_until=live_transfer_until)], now=now)


# How far a call has got: a status callback never moves an attempt back (Twilio may deliver them out of order),
# and a final status is recorded once (a duplicate or late callback, or reconciliation, adds nothing).
_PROGRESS = {m.DIALING: 0, m.PLACED: 1, "queued": 1, "initiated": 2, "ringing": 3, "in-progress": 4}


def _progress(status: str) -> int:
    return 5 if status in m.FINAL_STATES else _PROGRESS.get(status, 1)


async def record_status(session: AsyncSession, attempt: Any, form: dict[str, str], *, now: datetime,
                        via: str = "callback", detail: str | None = None, scale: float = 1.0) -> str | None:
    """A status callback (or what reconciliation learnt from Twilio): update the attempt; on its first final
    status, tell the dispatcher what happened. The caller holds the attempt's row lock (`load_attempt`).

    Idempotent: once the attempt is final, a duplicate or late final status reports nothing again (only fills
    in what was missing), so the callback and reconciliation, in either order, give one result.
    """
    status = form.get("CallStatus", "")
    answered_by = form.get("AnsweredBy") or attempt.answered_by
    duration = form.get("CallDuration") or form.get("Duration")
    dur = int(duration) if duration and duration.isdigit() else None
    sid = form.get("CallSid") or None
    if attempt.status in m.FINAL_STATES:
        await session.execute(
            sql("UPDATE call_attempts SET answered_by = COALESCE(answered_by, :ab),"
                " duration_s = COALESCE(duration_s, :dur) WHERE id = :id"),
            {"ab": answered_by, "dur": dur, "id": attempt.id})
        return None
    if _progress(status) < _progress(attempt.status):
        status = attempt.status  # a late "ringing" after "in-progress": keep the furthest state
    # An automated call's sid, when we never stored it (the process died inside the create request): its own
    # callback adopts it (unless some attempt has it already: the unique sid must never fail a callback).
    adopt_sid = sid if attempt.channel == "auto_call" and getattr(attempt, "call_sid", None) is None else None
    await session.execute(
        sql("UPDATE call_attempts SET status = :s, answered_by = :ab, duration_s = COALESCE(:dur, duration_s),"
            " call_sid = COALESCE(call_sid, (SELECT CAST(:sid AS varchar) WHERE NOT EXISTS"
            " (SELECT 1 FROM call_attempts o WHERE o.call_sid = CAST(:sid AS varchar)))), updated_at = :now"
            " WHERE id = :id"),
        {"s": status[:16], "ab": answered_by, "dur": dur, "sid": adopt_sid, "now": now, "id": attempt.id})
    if attempt.channel == "operator_call":
        return None  # the seat's own leg: what happened is the operator's disposition, not this status
    final = status in m.TWILIO_FINAL
    if final:
        await transfers.call_ended(session, attempt_id=attempt.id, now=now, scale=scale)
    if attempt.stop_requested_at is not None or attempt.outcome == "stopped":
        # Stopped on the dispatcher's order: its "canceled" or "completed" is that stop, never a failure to retry.
        if final:
            await stops.report_stopped(session, attempt_id=attempt.id, now=now,
                                       detail=f"stopped on the dispatcher's order; Twilio CallStatus={status}")
        return "stopped" if final else None
    result = FINAL_RESULTS.get(status)
    if status == "completed":
        if answered_by and answered_by.startswith("machine"):
            result = "machine"
        elif not attempt.digits:
            result = "answered"  # a person picked up but pressed nothing: reached, no answer recorded
    if result:
        said = detail or (f"Twilio CallStatus={status}" + (f", AnsweredBy={answered_by}" if answered_by else "")
                          + (" (found by reconciliation: its status callback never came)"
                             if via == "reconciliation" else ""))
        await session.execute(sql("UPDATE call_attempts SET outcome = COALESCE(outcome, :o) WHERE id = :id"),
                              {"o": result, "id": attempt.id})
        await enqueue(session, [result_job(task_id=attempt.task_id, attempt=attempt.attempt, result=result,
                                           now=now, channel=attempt.channel, detail=said)], now=now)
    return result
