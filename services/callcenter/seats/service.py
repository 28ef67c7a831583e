"""Seat operators' work: set a state, claim the next task (a lease), call, record a disposition. Callers own the transaction.

The operator queue is the dispatcher's `OperatorCall` jobs, claimed through the
shared queue (`shared.queue.service.claim` with the seat's unit as the scope
prefix: emergencies first, then tier, then the nearest deadline). A claim is a
job lease held by the seat (locked_by "seat:<key>"): if no disposition comes
before the lease ends, the queue's reclaim returns the task to the queue, as it
does for a worker that died. Two seats racing for one task cannot both get it
(FOR UPDATE SKIP LOCKED in one statement). What a seat shows about the task
comes from the job and from the dispatcher's read functions (shared.contracts).

A seat that answers a live transfer (key 2, calls/transfers.py) gets the task's
operator call without claiming it: settled when it answers, at its reads of its
tasks, and before any seat claims from the queue.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.callcenter.calls import transfers
from services.callcenter.calls.service import STATUS_EVENTS, CallPlacer
from shared import contracts
from shared.auth.service import Principal
from shared.contracts import DISPOSITION_OUTCOMES, DISPOSITIONS, NEVER_CLOSES_EMERGENCY
from shared.contracts import dispatcher as dispatcher_contract
from shared.db import transaction
from shared.metrics import SEAT_CLAIM_SECONDS
from shared.phone import InvalidPhone, normalize_phone
from shared.queue import service as q
from shared.queue.service import LeaseLost
from shared.sql import sql

OPERATOR_KINDS = [contracts.OperatorCall.KIND]
STATES_CHOSEN = ("available", "paused", "offline")  # the states a seat sets itself (on_call comes from calling)
NOT_CLAIMED = "this task is not claimed by your seat (claim it with POST /v1/queue/next), or your claim expired"


class SeatRefused(Exception):
    """The seat may not do this now; `code` names why (the console's text key), `status` is the HTTP answer."""

    def __init__(self, code: str, status: int, detail: str) -> None:
        super().__init__(detail)
        self.code, self.status, self.detail = code, status, detail


def seat_worker(principal: Principal) -> str:
    return f"seat:{principal.key_id}"


async def set_state(session: AsyncSession, principal: Principal, *, state: str, reason: str | None,
                    phone: str | None, now: datetime) -> Any:
    return (await session.execute(
        sql("INSERT INTO seats (key_id, name, unit, state, reason, phone, updated_at)"
            " VALUES (:k, :n, :u, :s, :r, :p, :now)"
            " ON CONFLICT (key_id) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason, wrap_up_until = NULL,"
            " phone = COALESCE(EXCLUDED.phone, seats.phone), unit = EXCLUDED.unit, updated_at = EXCLUDED.updated_at"
            " RETURNING key_id, name, unit, state, reason, phone, updated_at"),
        {"k": principal.key_id, "n": principal.name, "u": principal.unit, "s": state, "r": reason, "p": phone,
         "now": now})).one()


async def get_seat(session: AsyncSession, principal: Principal) -> Any:
    return (await session.execute(sql("SELECT * FROM seats WHERE key_id = :k"), {"k": principal.key_id})).first()


async def claim_next(session: AsyncSession, principal: Principal, *, now: datetime,
                     lease_s: float) -> q.ClaimedJob | None:
    """Take the most urgent waiting operator call in my unit: emergencies, then tier, then earliest deadline.

    "My unit" is the task's assigned unit when a supervisor handed it over, else its region's (the job's scope).
    The claim statement's own time goes to SEAT_CLAIM_SECONDS and onto the job (extra["claim_ms"]): what the
    database spent, apart from the HTTP queueing in front of it.
    """
    started = time.perf_counter()
    claimed = await q.claim(session, queue=contracts.CALLCENTER_QUEUE, kinds=OPERATOR_KINDS,
                            worker=seat_worker(principal), now=now, lease_s=lease_s, scope_prefix=principal.unit)
    elapsed_s = time.perf_counter() - started
    SEAT_CLAIM_SECONDS.observe(elapsed_s)
    if not claimed:
        return None
    claimed[0].extra["claim_ms"] = elapsed_s * 1000
    return claimed[0]


async def my_claim(session: AsyncSession, principal: Principal, task_id: uuid.UUID) -> q.ClaimedJob | None:
    held = await q.held(session, worker=seat_worker(principal), kinds=OPERATOR_KINDS, task_id=task_id, lock=True)
    return held[0] if held else None


async def who_holds(session: AsyncSession, principal: Principal,
                    task_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """For each task whose operator call a seat holds: "mine" (my seat) or "other" (another seat)."""
    me = seat_worker(principal)
    held_by = await q.holders(session, kinds=OPERATOR_KINDS, task_ids=task_ids)
    return {task_id: "mine" if worker == me else "other" for task_id, worker in held_by.items()}


@dataclass(frozen=True, slots=True)
class TaskCard:
    """What the operator sees of a task: the dispatcher's current view of it, and the number to call."""

    id: uuid.UUID
    case_id: uuid.UUID
    tier: str
    status: str
    phone: str
    region_code: str
    fraud_type: str
    due_at: datetime
    emergency: bool


async def task_card(session: AsyncSession, task_id: uuid.UUID) -> tuple[TaskCard, list[dict[str, Any]]]:
    """The task as the dispatcher has it now, and its reasons (from its warnings)."""
    brief = await dispatcher_contract.task_brief(session, task_id)
    if brief is None:
        raise SeatRefused("not_claimed", 409, NOT_CLAIMED)
    card = TaskCard(id=brief.id, case_id=brief.case_id, tier=brief.tier, status=brief.status, phone=brief.phone,
                    region_code=brief.region_code, fraud_type=brief.fraud_type, due_at=brief.due_at,
                    emergency=brief.emergency_at is not None)
    return card, await dispatcher_contract.task_reasons(session, task_id)


async def record_disposition(session: AsyncSession, principal: Principal, *, claim: Any, task_id: uuid.UUID,
                             disposition: str, note: str | None, callback_at: datetime | None, now: datetime,
                             wrap_up_s: float, loss: contracts.LossDetails | None = None) -> None:
    """Finish the claim and send the disposition to the dispatcher (which closes, escalates or reschedules);
    the seat goes to wrap-up for `wrap_up_s` (0: straight back to available)."""
    await q.complete(session, job_id=claim.id, worker=seat_worker(principal))
    job = contracts.OperatorCall.of(claim)
    result = contracts.ChannelResult(task_id=task_id, channel="operator_call", attempt=job.attempt,
                                     result="disposition", disposition=disposition, note=note, actor=principal.actor,
                                     callback_at=callback_at, loss=loss)
    await q.enqueue(session, [result.to_job(now=now)], now=now)
    if disposition == "wrong_number":
        phone = job.phone
        await session.execute(
            sql("INSERT INTO do_not_call (phone, reason, added_by, added_at) VALUES (:p, :r, :by, :now)"
                " ON CONFLICT (phone) DO NOTHING"),
            {"p": phone, "r": note or "wrong number (operator disposition)", "by": principal.actor, "now": now})
    # Wrap-up, then back to work; a seat that paused or went offline meanwhile stays so.
    await enter_wrap_up(session, key_id=principal.key_id, now=now, wrap_up_s=wrap_up_s)


async def enter_wrap_up(session: AsyncSession, *, key_id: str, now: datetime, wrap_up_s: float) -> None:
    """A disposition was recorded: the seat rests `wrap_up_s` (no claim, no key-2 ring), then is available."""
    until = now + timedelta(seconds=wrap_up_s) if wrap_up_s > 0 else None
    await session.execute(
        sql("UPDATE seats SET state = CASE WHEN CAST(:until AS timestamptz) IS NULL THEN 'available' ELSE 'wrap_up' END,"
            " wrap_up_until = :until, updated_at = :now"
            " WHERE key_id = :k AND state IN ('available', 'on_call', 'wrap_up')"),
        {"now": now, "until": until, "k": key_id})


async def end_wrap_ups(session: AsyncSession, *, now: datetime, key_id: str | None = None) -> int:
    """Seats whose wrap-up is over are available again (all, or one); idle since the wrap-up's end.

    Run before a seat's state is read for work (a claim, the key-2 ring, the console) and by a sweep, so no
    seat stays in wrap-up past its time whoever looks.
    """
    one = "AND key_id = :k" if key_id is not None else ""
    result = await session.execute(
        sql("UPDATE seats SET state = 'available', updated_at = wrap_up_until, wrap_up_until = NULL"
            f" WHERE state = 'wrap_up' AND wrap_up_until <= :now {one}"), {"now": now, "k": key_id})
    return result.rowcount or 0


def wrap_up_left_s(seat: Any, now: datetime, scale: float = 1.0) -> int:
    """Whole (real) seconds of wrap-up left (at least 1 while in wrap-up; 0 when not)."""
    if seat is None or seat.state != "wrap_up":
        return 0
    until = seat.wrap_up_until
    return max(1, math.ceil((until - now).total_seconds() / scale)) if until is not None else 1


@dataclass(frozen=True, slots=True)
class HeldTask:
    """A task my seat holds, as the dispatcher has it now."""

    id: uuid.UUID
    tier: str
    status: str
    due_at: datetime
    region_code: str
    fraud_type: str
    lease_expires_at: datetime | None
    # A citizen put through to this seat by key 2 for this task: bridged at (the call timer), ended at.
    connected_at: datetime | None = None
    call_ended_at: datetime | None = None


async def my_tasks(session: AsyncSession, principal: Principal, *, now: datetime | None = None,
                   scale: float = 1.0) -> list[HeldTask]:
    """The tasks my seat holds; with `now`, first those of citizens put through to me (the caller commits).

    `scale`: clock seconds per real second (a fast clock, SHOUHU_TIME_SCALE); an operator's claims last real time.
    """
    live: dict[uuid.UUID, transfers.LiveTransfer] = {}
    if now is not None:
        await transfers.settle_claims(session, now=now, seat=principal.key_id, scale=scale)
    # The claims first, then the transfers: a claim a transfer gave this seat commits with (or after) the
    # transfer's answer, so reading in this order never shows the task without its live call.
    claims = await q.held(session, worker=seat_worker(principal), kinds=OPERATOR_KINDS)
    if now is not None:
        live = await transfers.seat_transfers(session, seat=principal.key_id, since=now - timedelta(hours=4))
    tasks = []
    for claim in claims:
        brief = await dispatcher_contract.task_brief(session, contracts.OperatorCall.of(claim).task_id)
        if brief is not None:  # a seat holds one or two tasks at a time: one read each is fine
            transfer = live.get(brief.id)
            tasks.append(HeldTask(id=brief.id, tier=brief.tier, status=brief.status, due_at=brief.due_at,
                                  region_code=brief.region_code, fraud_type=brief.fraud_type,
                                  lease_expires_at=claim.lease_expires_at,
                                  connected_at=transfer.connected_at if transfer else None,
                                  call_ended_at=transfer.ended_at if transfer else None))
    return tasks


async def history(session: AsyncSession, principal: Principal, *, phone: str) -> dict[str, Any] | None:
    """A citizen's earlier cases in my unit: warnings, calls and outcomes. None when nothing is in my unit."""
    found = await dispatcher_contract.subject_history(session, phone=phone, unit=principal.unit)
    if not found.cases:
        return None
    calls = (await session.execute(
        sql("SELECT task_id, channel, attempt, status, outcome, created_at, duration_s FROM call_attempts"
            " WHERE task_id = ANY(CAST(:ids AS uuid[])) ORDER BY created_at"),
        {"ids": [c.task_id for c in found.cases]})).all()
    return {"cases": found.cases, "warnings": found.warnings, "calls": calls}


def lease_for(tier: str) -> timedelta:
    return timedelta(minutes=5 if tier == "high" else 10)


# ---- the operator actions, as the JSON API and the console both run them ---------------------------------

async def change_state(session: AsyncSession, principal: Principal, *, state: str, reason: str | None,
                       phone: str | None, now: datetime) -> Any:
    """Set my seat's state (pausing needs a reason) and, when given, its phone (stored as E.164)."""
    if state not in STATES_CHOSEN:
        raise SeatRefused("bad_state", 422, f"state: one of {', '.join(STATES_CHOSEN)}")
    if state == "paused" and not reason:
        raise SeatRefused("pause_reason", 422, "reason: required when pausing")
    if phone:
        try:
            phone = normalize_phone(phone)
        except InvalidPhone as exc:
            raise SeatRefused("bad_phone", 422, f"phone: {str(exc).removeprefix('phone ')}") from None
    return await set_state(session, principal, state=state, reason=reason or None, phone=phone or None, now=now)


@dataclass(frozen=True, slots=True)
class Claimed:
    task: Any  # the task_card row
    reasons: list[dict[str, Any]]
    expires_at: datetime
    claim_ms: float | None = None  # the claim statement alone (the view sends it as Server-Timing)


async def take_next(session: AsyncSession, principal: Principal, *, now: datetime, scale: float = 1.0) -> Claimed | None:
    """Claim the next task for an available seat (None: nothing waits); the lease is shorter for high tier.

    The lease is a person's working time, real seconds: on a fast clock (`scale` clock seconds per real
    second, SHOUHU_TIME_SCALE) it is stretched to last as long for the operator.
    """
    await end_wrap_ups(session, now=now, key_id=principal.key_id)
    seat = await get_seat(session, principal)
    if seat is not None and seat.state == "wrap_up":
        raise SeatRefused("wrap_up", 409,
                          f"your seat is in wrap-up for {wrap_up_left_s(seat, now, scale)} s more; end it early with"
                          " PUT /v1/seat {\"state\": \"available\"}")
    if seat is None or seat.state != "available":
        raise SeatRefused("not_available", 409,
                          "your seat is not available: PUT /v1/seat {\"state\": \"available\"} first")
    # A seat that answered a citizen's key 2 takes that task first, whoever claims now.
    await transfers.settle_claims(session, now=now, scale=scale)
    claim = await claim_next(session, principal, now=now, lease_s=600 * scale)
    if claim is None:
        return None
    task, reasons = await task_card(session, claim.task_id)
    lease = lease_for(task.tier) * scale
    await q.extend_lease(session, job_id=claim.id, worker=seat_worker(principal), now=now,
                         lease_s=lease.total_seconds())
    return Claimed(task, reasons, now + lease, claim.extra.get("claim_ms"))


@dataclass(frozen=True, slots=True)
class CallPlan:
    attempt_id: int
    seat_phone: str
    citizen_phone: str


async def prepare_call(session: AsyncSession, principal: Principal, task_id: uuid.UUID, *, from_number: str,
                       now: datetime) -> CallPlan:
    """Check the claim and the seat's phone, open the call attempt, and mark the seat on a call."""
    claim = await my_claim(session, principal, task_id)
    if claim is None:
        raise SeatRefused("not_claimed", 409, NOT_CLAIMED)
    seat = await get_seat(session, principal)
    if seat is None or not seat.phone:
        raise SeatRefused("no_phone", 409, "your seat has no phone: PUT /v1/seat {\"phone\": ...}")
    job = contracts.OperatorCall.of(claim)
    phone = job.phone
    attempt = (await session.execute(
        sql("INSERT INTO call_attempts (task_id, channel, attempt, to_number, from_number, fraud_type, status,"
            " created_at, updated_at) VALUES (:t, 'operator_call', :a, :to, :from_, :ft, 'dialing', :now, :now)"
            " ON CONFLICT ON CONSTRAINT uq_call_attempts_task_channel_attempt"
            " DO UPDATE SET updated_at = EXCLUDED.updated_at RETURNING id, call_sid"),
        {"t": task_id, "a": job.attempt, "to": phone, "from_": from_number, "ft": job.fraud_type,
         "now": now})).one()
    if attempt.call_sid:
        raise SeatRefused("already_calling", 409,
                          f"already calling ({attempt.call_sid}); record a disposition to finish")
    await session.execute(sql("UPDATE seats SET state = 'on_call', wrap_up_until = NULL, updated_at = :now"
                              " WHERE key_id = :k"),
                          {"now": now, "k": principal.key_id})
    return CallPlan(attempt.id, seat.phone, phone)


async def click_to_call(sessionmaker: async_sessionmaker[AsyncSession], placer: CallPlacer, principal: Principal,
                        task_id: uuid.UUID, *, from_number: str, now: datetime) -> tuple[str, CallPlan]:
    """Ring the seat's phone, then (TwiML /twilio/bridge) dial the citizen; returns the call SID.

    The one action that owns its transactions: Twilio is asked between two short
    ones, never while a transaction holds the claim's row lock.
    """
    async with transaction(sessionmaker) as session:
        plan = await prepare_call(session, principal, task_id, from_number=from_number, now=now)
    call = await placer.client.calls.create_async(
        to=plan.seat_phone, from_=from_number, method="POST",
        url=placer.url("/twilio/bridge", plan.attempt_id), status_callback=placer.url("/twilio/status", plan.attempt_id),
        status_callback_method="POST", status_callback_event=STATUS_EVENTS, timeout=30)
    async with transaction(sessionmaker) as session:
        await session.execute(sql("UPDATE call_attempts SET call_sid = :sid, status = 'placed' WHERE id = :id"),
                              {"sid": call.sid, "id": plan.attempt_id})
    return call.sid, plan


async def dispose(session: AsyncSession, principal: Principal, task_id: uuid.UUID, *, disposition: str,
                  note: str | None, callback_at: datetime | None, now: datetime, wrap_up_s: float,
                  loss: contracts.LossDetails | None = None) -> None:
    """Record what happened on the call for a task my seat holds (a callback needs a time in the future).

    `loss`: what the citizen said about a transfer already made (bank, account, amount, time); the
    dispatcher puts it on the task's payment stop. An emergency is never closed as dissuaded: refused
    here at once (409, the claim stays mine), as the dispatcher would refuse it.
    """
    if disposition not in DISPOSITIONS:
        raise SeatRefused("bad_disposition", 422, f"disposition: one of {', '.join(DISPOSITIONS)}")
    if disposition == "callback" and (callback_at is None or callback_at <= now):
        raise SeatRefused("callback_time", 422, "callback_at: required for a callback, and in the future")
    claim = await my_claim(session, principal, task_id)
    if claim is None:
        raise SeatRefused("not_claimed", 409, NOT_CLAIMED)
    if DISPOSITION_OUTCOMES[disposition] in NEVER_CLOSES_EMERGENCY:
        brief = await dispatcher_contract.task_brief(session, task_id)
        if brief is not None and brief.emergency_at is not None:
            raise SeatRefused("emergency_refused", 409,
                              f"disposition: this task is an emergency (the citizen has already sent money) and"
                              f" cannot be closed as '{disposition}'; record loss_reported with what the citizen"
                              " said, or callback")
    try:
        await record_disposition(session, principal, claim=claim, task_id=task_id, disposition=disposition,
                                 note=note or None, callback_at=callback_at if disposition == "callback" else None,
                                 now=now, wrap_up_s=wrap_up_s, loss=loss)
    except LeaseLost:
        raise SeatRefused("not_claimed", 409, NOT_CLAIMED) from None
