"""Seat operators' work: set a state, claim the next task (a lease), call, record a disposition. Callers own the transaction.

The operator queue is the dispatcher's "call.operator" jobs. Claiming one is a
job lease held by the seat (locked_by "seat:<key>"): if no disposition comes
before the lease ends, the queue's reclaim returns the task to the queue, as
it does for a worker that died. Two seats racing for one task cannot both get
it (FOR UPDATE SKIP LOCKED in one statement).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.callcenter.calls.service import STATUS_EVENTS, CallPlacer
from shared.auth.service import Principal
from shared.db import transaction
from shared.phone import InvalidPhone, normalize_phone
from shared.queue import service as q
from shared.queue.service import LeaseLost, NewJob
from shared.sql import sql

RESULT_KIND = "task.channel_result"
STATES_CHOSEN = ("available", "paused", "offline")  # the states a seat sets itself (on_call comes from calling)
DISPOSITIONS = ("dissuaded", "loss_reported", "unreachable", "wrong_number", "refused", "callback")
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
            " ON CONFLICT (key_id) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason,"
            " phone = COALESCE(EXCLUDED.phone, seats.phone), unit = EXCLUDED.unit, updated_at = EXCLUDED.updated_at"
            " RETURNING key_id, name, unit, state, reason, phone, updated_at"),
        {"k": principal.key_id, "n": principal.name, "u": principal.unit, "s": state, "r": reason, "p": phone,
         "now": now})).one()


async def get_seat(session: AsyncSession, principal: Principal) -> Any:
    return (await session.execute(sql("SELECT * FROM seats WHERE key_id = :k"), {"k": principal.key_id})).first()


async def claim_next(session: AsyncSession, principal: Principal, *, now: datetime, lease_s: float) -> Any:
    """Take the most urgent waiting operator call in my unit: highest tier, then earliest deadline.

    "My unit" is the task's assigned unit when a supervisor handed it over, else its region's.
    """
    return (await session.execute(
        sql("WITH picked AS ("
            "  SELECT j.id FROM jobs j JOIN tasks t ON t.id = j.task_id"
            "  WHERE j.queue = 'callcenter' AND j.kind = 'call.operator' AND j.status = 'queued'"
            "    AND j.run_at <= :now AND t.status <> 'closed' AND COALESCE(t.assigned_unit, t.region_code) LIKE :unit"
            "  ORDER BY CASE t.tier WHEN 'high' THEN 0 WHEN 'medium' THEN 1 ELSE 2 END, t.due_at, j.priority, j.id"
            "  LIMIT 1 FOR UPDATE OF j SKIP LOCKED)"
            " UPDATE jobs SET status = 'running', attempts = jobs.attempts + 1, locked_by = :seat,"
            "   lease_expires_at = CAST(:now AS timestamptz) + make_interval(secs => :lease)"
            " FROM picked WHERE jobs.id = picked.id"
            " RETURNING jobs.id AS job_id, jobs.task_id, jobs.payload, jobs.lease_expires_at"),
        {"now": now, "unit": principal.unit + "%", "seat": seat_worker(principal), "lease": lease_s})).first()


async def my_claim(session: AsyncSession, principal: Principal, task_id: uuid.UUID) -> Any:
    return (await session.execute(
        sql("SELECT id AS job_id, payload, lease_expires_at FROM jobs WHERE task_id = :t AND kind = 'call.operator'"
            " AND status = 'running' AND locked_by = :seat FOR UPDATE"),
        {"t": task_id, "seat": seat_worker(principal)})).first()


async def task_card(session: AsyncSession, task_id: uuid.UUID) -> Any:
    """What the operator sees: the task, its reasons (from its warnings), the number to call."""
    task = (await session.execute(
        sql("SELECT id, case_id, tier, status, phone, region_code, fraud_type, due_at FROM tasks WHERE id = :t"),
        {"t": task_id})).first()
    # Through case_id, which is indexed (one task per case); warnings.task_id has no index on purpose (ingest cost).
    reasons = (await session.execute(
        sql("SELECT reasons FROM warnings WHERE case_id = :c ORDER BY received_at"),
        {"c": task.case_id})).scalars().all()
    return task, [r for group in reasons for r in (group or [])]


async def record_disposition(session: AsyncSession, principal: Principal, *, claim: Any, task_id: uuid.UUID,
                             disposition: str, note: str | None, callback_at: datetime | None, now: datetime) -> None:
    """Finish the claim and send the disposition to the dispatcher (which closes, escalates or reschedules)."""
    await q.complete(session, job_id=claim.job_id, worker=seat_worker(principal))
    attempt = int(claim.payload.get("attempt", 0))
    await q.enqueue(session, [NewJob(
        queue="dispatcher", kind=RESULT_KIND, run_at=now, task_id=task_id, priority=5,
        dedupe_key=f"disposition:{task_id}:{attempt}",
        payload={"task_id": str(task_id), "channel": "operator_call", "attempt": attempt, "result": "disposition",
                 "disposition": disposition, "note": note, "actor": principal.actor,
                 "callback_at": callback_at.isoformat() if callback_at else None})], now=now)
    if disposition == "wrong_number":
        phone = (await session.execute(sql("SELECT phone FROM tasks WHERE id = :t"), {"t": task_id})).scalar_one()
        await session.execute(
            sql("INSERT INTO do_not_call (phone, reason, added_by, added_at) VALUES (:p, :r, :by, :now)"
                " ON CONFLICT (phone) DO NOTHING"),
            {"p": phone, "r": note or "wrong number (operator disposition)", "by": principal.actor, "now": now})
    # Back to work after a call; a seat that paused or went offline meanwhile stays so.
    await session.execute(sql("UPDATE seats SET state = 'available', updated_at = :now"
                              " WHERE key_id = :k AND state IN ('on_call', 'wrap_up')"),
                          {"now": now, "k": principal.key_id})


async def my_tasks(session: AsyncSession, principal: Principal) -> list[Any]:
    return list((await session.execute(
        sql("SELECT t.id, t.tier, t.status, t.due_at, t.region_code, t.fraud_type, j.lease_expires_at"
            " FROM jobs j JOIN tasks t ON t.id = j.task_id WHERE j.kind = 'call.operator' AND j.status = 'running'"
            " AND j.locked_by = :seat ORDER BY t.due_at"), {"seat": seat_worker(principal)})).all())


async def history(session: AsyncSession, principal: Principal, *, phone: str) -> dict[str, Any] | None:
    """A citizen's earlier cases in my unit: warnings, calls and outcomes. None when nothing is in my unit."""
    cases = (await session.execute(
        sql("SELECT c.id, c.created_at, c.status, c.tier, c.region_code, t.id AS task_id, t.outcome, t.closed_at"
            " FROM cases c JOIN tasks t ON t.case_id = c.id WHERE c.phone = :p AND c.region_code LIKE :unit"
            " ORDER BY c.created_at DESC LIMIT 50"), {"p": phone, "unit": principal.unit + "%"})).all()
    if not cases:
        return None
    ids = [c.id for c in cases]
    warnings = (await session.execute(
        sql("SELECT case_id, source, signal, fraud_type, tier, occurred_at FROM warnings"
            " WHERE case_id = ANY(CAST(:ids AS uuid[])) ORDER BY occurred_at"), {"ids": ids})).all()
    calls = (await session.execute(
        sql("SELECT task_id, channel, attempt, status, outcome, created_at, duration_s FROM call_attempts"
            " WHERE task_id = ANY(CAST(:ids AS uuid[])) ORDER BY created_at"),
        {"ids": [c.task_id for c in cases]})).all()
    return {"cases": cases, "warnings": warnings, "calls": calls}


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


async def take_next(session: AsyncSession, principal: Principal, *, now: datetime) -> Claimed | None:
    """Claim the next task for an available seat (None: nothing waits); the lease is shorter for high tier."""
    seat = await get_seat(session, principal)
    if seat is None or seat.state != "available":
        raise SeatRefused("not_available", 409,
                          "your seat is not available: PUT /v1/seat {\"state\": \"available\"} first")
    claim = await claim_next(session, principal, now=now, lease_s=600)
    if claim is None:
        return None
    task, reasons = await task_card(session, claim.task_id)
    until = now + lease_for(task.tier)
    await session.execute(sql("UPDATE jobs SET lease_expires_at = :until WHERE id = :id"),
                          {"until": until, "id": claim.job_id})
    return Claimed(task, reasons, until)


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
    phone = (await session.execute(sql("SELECT phone FROM tasks WHERE id = :t"), {"t": task_id})).scalar_one()
    attempt = (await session.execute(
        sql("INSERT INTO call_attempts (task_id, channel, attempt, to_number, from_number, status,"
            " created_at, updated_at) VALUES (:t, 'operator_call', :a, :to, :from_, 'dialing', :now, :now)"
            " ON CONFLICT ON CONSTRAINT uq_call_attempts_task_channel_attempt"
            " DO UPDATE SET updated_at = EXCLUDED.updated_at RETURNING id, call_sid"),
        {"t": task_id, "a": int(claim.payload.get("attempt", 0)), "to": phone, "from_": from_number,
         "now": now})).one()
    if attempt.call_sid:
        raise SeatRefused("already_calling", 409,
                          f"already calling ({attempt.call_sid}); record a disposition to finish")
    await session.execute(sql("UPDATE seats SET state = 'on_call', updated_at = :now WHERE key_id = :k"),
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
                  note: str | None, callback_at: datetime | None, now: datetime) -> None:
    """Record what happened on the call for a task my seat holds (a callback needs a time in the future)."""
    if disposition not in DISPOSITIONS:
        raise SeatRefused("bad_disposition", 422, f"disposition: one of {', '.join(DISPOSITIONS)}")
    if disposition == "callback" and (callback_at is None or callback_at <= now):
        raise SeatRefused("callback_time", 422, "callback_at: required for a callback, and in the future")
    claim = await my_claim(session, principal, task_id)
    if claim is None:
        raise SeatRefused("not_claimed", 409, NOT_CLAIMED)
    try:
        await record_disposition(session, principal, claim=claim, task_id=task_id, disposition=disposition,
                                 note=note or None, callback_at=callback_at if disposition == "callback" else None,
                                 now=now)
    except LeaseLost:
        raise SeatRefused("not_claimed", 409, NOT_CLAIMED) from None
