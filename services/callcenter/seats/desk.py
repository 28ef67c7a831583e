"""Desk-phone seats: an operator with a phone and no screen works the queue by voice and keypad (issue 14).

The operator calls in: they dial the centre's seat line (a Twilio number whose voice webhook is
`{CALLCENTER_PUBLIC_URL}/twilio/desk`), and the seat is the one whose phone (PUT /v1/seat {"phone": ...}) is the
caller's number. Why calling in rather than being called: the operator chooses when to start, and the one call
carries the whole shift (hear a task, be bridged to the citizen, key the disposition, the next task) with nothing
to place or pace on our side; a call we placed would need the seat to be signed in from somewhere first, which a
phone without a screen cannot do. A number on no seat, or on a seat whose key is revoked or no longer an
operator's, is politely refused and nothing is claimed.

Caller ID is the identity here, so the seat line is for the centre's own desk phones: route it from the
centre's PBX or SIP trunk (which sets the caller's number), not from the public network, where caller ID can
be forged. Several seats may name one phone (shifts sharing a desk): the one set most recently works it.

Everything the phone does is the seats service's own functions, as the JSON API and the console run them: the
same claim (take_next, its lease), the same call attempt (prepare_call: channel operator_call, the 96110 caller
ID), the same disposition (dispose: the dispatcher closes the task with this operator as the actor) and the
same wrap-up. Callers own the transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from services.callcenter.calls import models as m
from services.callcenter.seats import service as seats
from shared.auth.service import Principal
from shared.clock import LOCAL_TZ
from shared.contracts import DISPOSITIONS
from shared.contracts import dispatcher as dispatcher_contract
from shared.sql import sql

# Keypad digit -> disposition, in the console's order (its keys 1-6 pick the same results).
DISPOSITION_KEYS: dict[str, str] = {str(i): d for i, d in enumerate(DISPOSITIONS, start=1)}
MAX_CALLBACK_MIN = 7 * 24 * 60  # a callback keyed in minutes: at most a week ahead
DIAL_STATUSES = frozenset(m.TWILIO_FINAL)


async def seat_by_phone(session: AsyncSession, phone: str) -> Principal | None:
    """The operator whose seat phone this is (the latest to set it), if their key is live and an operator's."""
    row = (await session.execute(
        sql("SELECT k.key_id, k.name, k.role, k.unit FROM seats s JOIN api_keys k ON k.key_id = s.key_id"
            " WHERE s.phone = :p AND k.revoked_at IS NULL AND k.role = 'operator'"
            " ORDER BY s.updated_at DESC LIMIT 1"), {"p": phone})).first()
    return Principal(key_id=row.key_id, name=row.name, role=row.role, unit=row.unit) if row else None


async def seat_principal(session: AsyncSession, key_id: str) -> Principal | None:
    """The operator of a seat named in a desk call's (signed) URL, while their key is live and an operator's."""
    row = (await session.execute(
        sql("SELECT k.key_id, k.name, k.role, k.unit FROM seats s JOIN api_keys k ON k.key_id = s.key_id"
            " WHERE s.key_id = :k AND k.revoked_at IS NULL AND k.role = 'operator'"), {"k": key_id})).first()
    return Principal(key_id=row.key_id, name=row.name, role=row.role, unit=row.unit) if row else None


@dataclass(frozen=True, slots=True)
class Readout:
    """A task as the desk phone reads it out."""

    task_id: uuid.UUID
    tier: str
    emergency: bool
    name: str | None
    age: int | None
    last4: str
    fraud_type: str
    signals: list[str]
    amount_at_risk: Decimal | None
    minutes_left: int  # negative once past the deadline


async def readout(session: AsyncSession, task_id: uuid.UUID, *, now: datetime) -> Readout:
    """What the operator hears of a task: who (name, age, number's last digits), what, how much, time left."""
    card, _ = await seats.task_card(session, task_id)
    subject = await dispatcher_contract.task_subject(session, task_id, today=now.astimezone(LOCAL_TZ).date())
    return Readout(task_id=card.id, tier=card.tier, emergency=card.emergency, name=subject.name, age=subject.age,
                   last4=card.phone[-4:], fraud_type=card.fraud_type, signals=subject.signals,
                   amount_at_risk=subject.amount_at_risk,
                   minutes_left=int((card.due_at - now).total_seconds() // 60))


@dataclass(frozen=True, slots=True)
class Home:
    """Where the operator is: holding a task (read it), or at the menu for their seat's state."""

    kind: Literal["task", "idle", "paused", "offline", "wrap_up"]
    task: Readout | None = None
    wrap_up_left_s: int = 0


async def home(session: AsyncSession, principal: Principal, *, now: datetime, scale: float = 1.0) -> Home:
    """A task my seat holds first (the line dropped mid-task, or a claim made elsewhere), else my state's menu."""
    await seats.end_wrap_ups(session, now=now, key_id=principal.key_id)
    held = await seats.my_tasks(session, principal, now=now, scale=scale)
    if held:
        return Home("task", task=await readout(session, held[0].id, now=now))
    seat = await seats.get_seat(session, principal)
    state = seat.state if seat is not None else "offline"
    if state == "wrap_up":
        return Home("wrap_up", wrap_up_left_s=seats.wrap_up_left_s(seat, now, scale))
    return Home(state if state in ("paused", "offline") else "idle")


async def next_task(session: AsyncSession, principal: Principal, *, now: datetime,
                    scale: float = 1.0) -> Readout | None:
    """Key 1 at the menu: ready for work (this ends a pause, or a wrap-up early, as PUT available does), then the
    next task exactly as the API claims it; None when nothing waits.

    The menu is only heard with no task in hand, so a seat still marked on a call (a line that dropped during a
    call whose claim has since ended) is not on one: ready too.
    """
    seat = await seats.get_seat(session, principal)
    if seat is None or seat.state != "available":
        await seats.change_state(session, principal, state="available", reason=None, phone=None, now=now)
    claimed = await seats.take_next(session, principal, now=now, scale=scale)
    return None if claimed is None else await readout(session, claimed.task.id, now=now)


async def pause(session: AsyncSession, principal: Principal, *, reason: str, now: datetime) -> None:
    await seats.change_state(session, principal, state="paused", reason=reason, phone=None, now=now)


async def sign_off(session: AsyncSession, principal: Principal, *, now: datetime) -> None:
    await seats.change_state(session, principal, state="offline", reason=None, phone=None, now=now)


async def start_call(session: AsyncSession, principal: Principal, task_id: uuid.UUID, *, from_number: str,
                     now: datetime) -> seats.CallPlan:
    """Key 1 on a task: the operator call's attempt, as click-to-call opens it; the seat is on a call. The desk
    phone's own call then dials the citizen (a <Dial> with the 96110 caller ID)."""
    return await seats.prepare_call(session, principal, task_id, from_number=from_number, now=now)


async def call_ended(session: AsyncSession, *, attempt_id: int, form: dict[str, str], now: datetime) -> bool:
    """The bridge to the citizen is over (the <Dial>'s action): note the citizen's leg and how it ended; True when
    the citizen answered. Its sid marks the attempt as called (a second call of the task waits for a disposition,
    as with click-to-call)."""
    dial_status = form.get("DialCallStatus", "")
    duration = form.get("DialCallDuration", "")
    sid = form.get("DialCallSid") or None
    await session.execute(
        sql("UPDATE call_attempts SET answered_by = :ab, updated_at = :now,"
            " status = CASE WHEN status = ANY(CAST(:finals AS text[])) THEN status ELSE :final END,"
            " duration_s = COALESCE(duration_s, :dur),"
            " call_sid = COALESCE(call_sid, (SELECT CAST(:sid AS varchar) WHERE NOT EXISTS"
            "   (SELECT 1 FROM call_attempts o WHERE o.call_sid = CAST(:sid AS varchar))))"
            " WHERE id = :id AND channel = 'operator_call'"),
        {"ab": ("citizen:" + (dial_status or "?"))[:24], "now": now, "finals": sorted(m.FINAL_STATES),
         "final": dial_status if dial_status in DIAL_STATUSES else "completed",
         "dur": int(duration) if duration.isdigit() else None, "sid": sid, "id": attempt_id})
    return dial_status in ("completed", "answered")


async def dispose(session: AsyncSession, principal: Principal, task_id: uuid.UUID, *, digit: str,
                  callback_in_min: int | None, now: datetime, wrap_up_s: float) -> str:
    """A disposition keyed on the desk phone, recorded as the API records it; returns the disposition."""
    disposition = DISPOSITION_KEYS[digit]
    callback_at = now + timedelta(minutes=callback_in_min) if callback_in_min else None
    await seats.dispose(session, principal, task_id, disposition=disposition, note="desk phone (keypad)",
                        callback_at=callback_at, now=now, wrap_up_s=wrap_up_s)
    return disposition
